//! The serving-store contract, on the in-memory store and on Redis.

use auth_core::ports::{Aggregate, PartitionFlush, TopicPartition, WindowOwner, WindowSlot, WindowUpdate};
use auth_core::{Region, Utility};
use auth_testkit::Backend;
use bytes::Bytes;

macro_rules! store_suite {
    ($name:ident, $backend:expr $(, #[$attribute:meta])*) => {
        mod $name {
            use super::*;

            #[tokio::test]
            $(#[$attribute])*
            async fn upserts_keep_the_newest_windows() {
                super::upserts_keep_the_newest_windows(&$backend("store")).await;
            }

            #[tokio::test]
            $(#[$attribute])*
            async fn region_partials_merge_over_partitions_and_rewrites_do_not_double() {
                super::region_partials_merge_over_partitions_and_rewrites_do_not_double(&$backend("store")).await;
            }

            #[tokio::test]
            $(#[$attribute])*
            async fn regions_keep_the_newest_windows_per_size() {
                super::regions_keep_the_newest_windows_per_size(&$backend("store")).await;
            }
        }
    };
}

store_suite!(memory, Backend::embedded);
store_suite!(redis, Backend::real, #[ignore = "needs Kafka and Redis: scripts/test.sh runs it"]);

fn update(owner: WindowOwner, start_ms: i64, sum: f64) -> WindowUpdate {
    WindowUpdate {
        owner,
        utility: Utility::Water,
        slot: WindowSlot { width_ms: 60_000, start_ms },
        aggregate: Aggregate::of(sum),
        closed: false,
    }
}

fn flush(partition: u32, windows: Vec<WindowUpdate>, checkpoint: Option<&'static [u8]>) -> PartitionFlush {
    PartitionFlush {
        partition: TopicPartition::new("p.water", partition),
        windows,
        checkpoint: checkpoint.map(Bytes::from_static),
    }
}

async fn upserts_keep_the_newest_windows(backend: &Backend) {
    let store = backend.new_store_keeping(2).await;
    let customer = WindowOwner::Customer(9);
    for start in [0, 60_000, 120_000] {
        store.apply(flush(0, vec![update(customer, start, 1.0)], None)).await.expect("apply");
    }
    store.apply(flush(0, vec![update(customer, 120_000, 5.0)], Some(b"cp"))).await.expect("apply");
    let windows = store.customer_windows(9).await.expect("read");
    let starts: Vec<(i64, f64)> = windows.iter().map(|w| (w.slot.start_ms, w.aggregate.sum)).collect();
    assert_eq!(starts, vec![(60_000, 1.0), (120_000, 5.0)]);
    let checkpoint = store.load_checkpoint(&TopicPartition::new("p.water", 0)).await.expect("load");
    assert_eq!(checkpoint.as_deref(), Some(&b"cp"[..]));
    assert_eq!(store.load_checkpoint(&TopicPartition::new("p.water", 1)).await.expect("load"), None);
    assert_eq!(store.known_customers(10).await.expect("ids"), vec![9]);
    assert!(store.customer_windows(10).await.expect("read").is_empty());
}

async fn region_partials_merge_over_partitions_and_rewrites_do_not_double(backend: &Backend) {
    let store = backend.new_store_keeping(10).await;
    let region = WindowOwner::Region(Region::from_code("US-TX").expect("Texas"));
    store.apply(flush(0, vec![update(region, 0, 2.0)], None)).await.expect("apply");
    store.apply(flush(1, vec![update(region, 0, 3.0)], None)).await.expect("apply");
    store.apply(flush(1, vec![update(region, 0, 3.0)], None)).await.expect("apply");
    let windows = store.region_windows(60_000, 0).await.expect("read");
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].window.aggregate, Aggregate { sum: 5.0, count: 2, min: 2.0, max: 3.0 });
    assert!(store.region_windows(3_600_000, 0).await.expect("read").is_empty());
}

async fn regions_keep_the_newest_windows_per_size(backend: &Backend) {
    let store = backend.new_store_keeping(2).await;
    let region = WindowOwner::Region(Region::from_code("US-TX").expect("Texas"));
    for start in [0, 60_000, 120_000] {
        store.apply(flush(0, vec![update(region, start, 1.0)], None)).await.expect("apply");
    }
    store.apply(flush(1, vec![update(region, 120_000, 2.0)], None)).await.expect("apply");
    let starts: Vec<(i64, f64)> = store
        .region_windows(60_000, 0)
        .await
        .expect("read")
        .iter()
        .map(|w| (w.window.slot.start_ms, w.window.aggregate.sum))
        .collect();
    assert_eq!(starts, vec![(60_000, 1.0), (120_000, 3.0)]);
}
