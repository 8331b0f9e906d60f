//! The serving-store contract, on the in-memory store and on Redis.

use auth_core::ports::{
    Aggregate, Checkpoint, MeterLastReading, PartitionCounts, PartitionFlush, PortError, Restatement, StreamProgress, TopicPartition,
    WindowOwner, WindowSlot, WindowUpdate,
};
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
            async fn closed_windows_replace_their_open_versions_and_push_out_the_oldest() {
                super::closed_windows_replace_their_open_versions_and_push_out_the_oldest(&$backend("store")).await;
            }

            #[tokio::test]
            $(#[$attribute])*
            async fn region_partials_merge_over_partitions_and_rewrites_do_not_double() {
                super::region_partials_merge_over_partitions_and_rewrites_do_not_double(&$backend("store")).await;
            }

            #[tokio::test]
            $(#[$attribute])*
            async fn a_stale_owner_is_fenced_off_and_its_successor_is_not() {
                super::a_stale_owner_is_fenced_off_and_its_successor_is_not(&$backend("store")).await;
            }

            #[tokio::test]
            $(#[$attribute])*
            async fn a_restatement_is_final_for_the_stream_and_for_older_runs() {
                super::a_restatement_is_final_for_the_stream_and_for_older_runs(&$backend("store")).await;
            }

            #[tokio::test]
            $(#[$attribute])*
            async fn meters_last_readings_only_move_forward_and_list_the_longest_silent_first() {
                super::meters_last_readings_only_move_forward_and_list_the_longest_silent_first(&$backend("store")).await;
            }

            #[tokio::test]
            $(#[$attribute])*
            async fn regions_keep_the_newest_windows_per_size() {
                super::regions_keep_the_newest_windows_per_size(&$backend("store")).await;
            }

            #[tokio::test]
            $(#[$attribute])*
            async fn a_flush_and_a_restatement_of_many_customers_and_meters_land_whole() {
                super::a_flush_and_a_restatement_of_many_customers_and_meters_land_whole(&$backend("store")).await;
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

/// A progress that says which checkpoint it came with.
fn progress_of(state: &[u8]) -> StreamProgress {
    StreamProgress { next_offset: state.len() as u64, max_event_ms: Some(7), counts: PartitionCounts { counted: 3, ..Default::default() } }
}

fn flush(partition: u32, windows: Vec<WindowUpdate>, checkpoint: Option<&'static [u8]>) -> PartitionFlush {
    PartitionFlush {
        partition: TopicPartition::new("p.water", partition),
        epoch: None,
        windows,
        meters: Vec::new(),
        checkpoint: checkpoint.map(|state| Checkpoint { state: Bytes::from_static(state), progress: progress_of(state) }),
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
    let progress = store.load_progress(&TopicPartition::new("p.water", 0)).await.expect("load");
    assert_eq!(progress, Some(progress_of(b"cp")), "the progress comes with its checkpoint");
    assert_eq!(store.load_progress(&TopicPartition::new("p.water", 1)).await.expect("load"), None);
    assert_eq!(store.known_customers(10).await.expect("ids"), vec![9]);
    assert!(store.customer_windows(10).await.expect("read").is_empty());
}

async fn closed_windows_replace_their_open_versions_and_push_out_the_oldest(backend: &Backend) {
    let store = backend.new_store_keeping(2).await;
    let customer = WindowOwner::Customer(4);
    let closed = |start_ms, sum| WindowUpdate { closed: true, ..update(customer, start_ms, sum) };
    let hour = |start_ms, sum, closed| WindowUpdate {
        slot: WindowSlot { width_ms: 3_600_000, start_ms },
        closed,
        ..update(customer, start_ms, sum)
    };
    store.apply(flush(0, vec![update(customer, 0, 1.0), hour(0, 1.0, false)], None)).await.expect("apply");
    store.apply(flush(0, vec![closed(0, 2.0), update(customer, 60_000, 3.0), hour(0, 3.0, false)], None)).await.expect("apply");
    store.apply(flush(0, vec![closed(60_000, 4.0), closed(120_000, 5.0), update(customer, 180_000, 6.0)], None)).await.expect("apply");
    let windows = store.customer_windows(4).await.expect("read");
    let summary: Vec<(i64, i64, f64, bool)> =
        windows.iter().map(|w| (w.slot.width_ms, w.slot.start_ms, w.aggregate.sum, w.closed)).collect();
    assert_eq!(summary, vec![(3_600_000, 0, 3.0, false), (60_000, 120_000, 5.0, true), (60_000, 180_000, 6.0, false)]);
    // A late reading re-emits a closed window; a processor replaying from an
    // older checkpoint emits one open again, and the closed one stays served.
    store.apply(flush(0, vec![closed(120_000, 7.0)], None)).await.expect("apply");
    store.apply(flush(0, vec![closed(180_000, 8.0), update(customer, 240_000, 1.0)], None)).await.expect("apply");
    store.apply(flush(0, vec![update(customer, 180_000, 0.5)], None)).await.expect("apply");
    let sums: Vec<(i64, f64)> = store
        .customer_windows(4)
        .await
        .expect("read")
        .iter()
        .filter(|w| w.slot.width_ms == 60_000)
        .map(|w| (w.slot.start_ms, w.aggregate.sum))
        .collect();
    assert_eq!(sums, vec![(180_000, 8.0), (240_000, 1.0)]);
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

async fn a_stale_owner_is_fenced_off_and_its_successor_is_not(backend: &Backend) {
    let store = backend.new_store_keeping(10).await;
    let partition = TopicPartition::new("p.water", 0);
    let customer = WindowOwner::Customer(21);
    let owned = |epoch, sum, checkpoint| PartitionFlush { epoch: Some(epoch), ..flush(0, vec![update(customer, 0, sum)], Some(checkpoint)) };
    let stale = store.claim(&partition).await.expect("claim");
    store.apply(owned(stale, 1.0, b"first")).await.expect("the owner writes");
    let successor = store.claim(&partition).await.expect("claim");
    assert!(successor > stale, "epochs grow: {stale} then {successor}");
    store.apply(owned(successor, 2.0, b"successor")).await.expect("the successor writes");

    let refused = store.apply(owned(stale, 9.0, b"stale")).await.expect_err("the stale owner is refused");
    match refused {
        PortError::Fenced { partition: fenced, epoch, current } => {
            assert_eq!((fenced, epoch, current), (partition.clone(), stale, successor));
        }
        other => panic!("expected a fenced write, got {other}"),
    }
    let windows = store.customer_windows(21).await.expect("read");
    assert_eq!(windows.iter().map(|w| w.aggregate.sum).collect::<Vec<_>>(), vec![2.0], "nothing of the refused flush landed");
    assert_eq!(store.load_checkpoint(&partition).await.expect("load").as_deref(), Some(&b"successor"[..]));
    assert_eq!(store.load_progress(&partition).await.expect("load"), Some(progress_of(b"successor")));
    // Another partition's claims are its own; writes that are no owner's (restatement) are never fenced.
    let other = TopicPartition::new("p.water", 1);
    assert_eq!(store.claim(&other).await.expect("claim"), 1);
    store.apply(flush(0, vec![update(customer, 0, 3.0)], None)).await.expect("an unfenced write");
}

/// The batch restates a window the stream wrote from two partitions (the
/// topic grew: the customer moved from partition 1 to 3 during the window).
/// The restated totals replace every partition's part; the stream's later
/// writes of that window are left out (its other windows still land); an
/// older run is refused; a newer one replaces the restatement.
async fn a_restatement_is_final_for_the_stream_and_for_older_runs(backend: &Backend) {
    let store = backend.new_store().await;
    let (customer, region) = (WindowOwner::Customer(5), WindowOwner::Region(Region::from_code("US-CA").expect("a region")));
    store.apply(flush(1, vec![update(customer, 0, 2.0), update(region, 0, 2.0)], None)).await.expect("apply");
    store.apply(flush(3, vec![update(customer, 0, 3.0), update(region, 0, 3.0)], None)).await.expect("apply");
    let slot = WindowSlot { width_ms: 60_000, start_ms: 0 };
    let restatement = |version, sum| Restatement {
        utility: Utility::Water,
        slot,
        version,
        customers: vec![(5, Aggregate::of(sum))],
        regions: vec![(Region::from_code("US-CA").expect("a region"), Aggregate::of(sum))],
    };
    store.restate(restatement(5, 9.0)).await.expect("restate");
    let read = || async {
        let customer = store.customer_windows(5).await.expect("read");
        let regions = store.region_windows(60_000, 0).await.expect("read");
        let customer: Vec<(i64, f64, bool)> = customer.iter().map(|w| (w.slot.start_ms, w.aggregate.sum, w.closed)).collect();
        let regions: Vec<(i64, f64, bool)> =
            regions.iter().map(|w| (w.window.slot.start_ms, w.window.aggregate.sum, w.window.closed)).collect();
        (customer, regions)
    };
    assert_eq!(read().await, (vec![(0, 9.0, true)], vec![(0, 9.0, true)]), "the batch's totals, whole");

    let mut closed_late = update(customer, 0, 4.0);
    closed_late.closed = true;
    let later = vec![closed_late, update(region, 0, 4.0), update(customer, 60_000, 1.0)];
    store.apply(flush(3, later, Some(b"cp"))).await.expect("apply");
    assert_eq!(read().await.0, vec![(0, 9.0, true), (60_000, 1.0, false)], "the restated window stays, the next one lands");
    assert_eq!(read().await.1, vec![(0, 9.0, true)]);
    let checkpoint = store.load_checkpoint(&TopicPartition::new("p.water", 3)).await.expect("load");
    assert_eq!(checkpoint.as_deref(), Some(&b"cp"[..]), "the rest of the flush is written");

    match store.restate(restatement(4, 1.0)).await {
        Err(PortError::Superseded { version: 4, current: 5, .. }) => {}
        other => panic!("expected the older run to be refused, got {other:?}"),
    }
    store.restate(restatement(5, 9.0)).await.expect("the same run again");
    store.restate(restatement(6, 7.0)).await.expect("a newer run");
    assert_eq!(read().await, (vec![(0, 7.0, true), (60_000, 1.0, false)], vec![(0, 7.0, true)]));
}

/// The stream writes each meter's newest reading time with its windows; a
/// replay's older time changes nothing, a fenced owner's lands nowhere.
async fn meters_last_readings_only_move_forward_and_list_the_longest_silent_first(backend: &Backend) {
    let store = backend.new_store().await;
    let partition = TopicPartition::new("p.water", 0);
    let read = |meters: &[(u64, i64)]| meters.iter().map(|&(meter_id, ts_ms)| MeterLastReading { meter_id, ts_ms }).collect::<Vec<_>>();
    let with_meters = |epoch, meters: &[(u64, i64)]| PartitionFlush { epoch: Some(epoch), meters: read(meters), ..flush(0, Vec::new(), None) };
    let stale = store.claim(&partition).await.expect("claim");
    store.apply(with_meters(stale, &[(3, 1_000), (12, 5_000), (2, 1_000)])).await.expect("apply");
    let owner = store.claim(&partition).await.expect("claim");
    store.apply(with_meters(owner, &[(3, 500), (12, 6_000)])).await.expect("a replay's older time and a newer one");
    assert!(store.apply(with_meters(stale, &[(2, 9_000)])).await.is_err(), "the stale owner is fenced off");

    let silent = store.meters_silent_since(6_000, 0, 10).await.expect("read");
    assert_eq!(silent, read(&[(2, 1_000), (3, 1_000)]), "meter 12 read at 6000; equal times in meter order");
    assert_eq!(store.meters_silent_since(6_001, 1, 2).await.expect("read"), read(&[(3, 1_000), (12, 6_000)]));
    assert_eq!(store.meters_silent_since(1_000, 0, 10).await.expect("read"), Vec::new());
    assert_eq!(store.meters_silent_since(i64::MAX, 0, 0).await.expect("read"), Vec::new());
}

/// A processor catching up writes every customer of its partition in one
/// flush, and a checkpoint names every meter that read since the last one;
/// the batch restates a day of every customer. Such writes are larger than
/// one step of the store takes (a Redis script's arguments, and the time it
/// holds the server): they land whole all the same.
async fn a_flush_and_a_restatement_of_many_customers_and_meters_land_whole(backend: &Backend) {
    const CUSTOMERS: u64 = 12_000;
    let store = backend.new_store_keeping(10).await;
    let partition = TopicPartition::new("p.water", 0);
    let epoch = store.claim(&partition).await.expect("claim");
    let region = Region::from_code("US-TX").expect("a region");
    let windows: Vec<WindowUpdate> = (1..=CUSTOMERS)
        .flat_map(|customer_id| {
            let closed = WindowUpdate { closed: true, ..update(WindowOwner::Customer(customer_id), 0, customer_id as f64) };
            [closed, update(WindowOwner::Customer(customer_id), 60_000, 1.0)]
        })
        .chain([update(WindowOwner::Region(region), 0, 7.0)])
        .collect();
    let meters: Vec<MeterLastReading> = (1..=2 * CUSTOMERS).map(|meter_id| MeterLastReading { meter_id, ts_ms: meter_id as i64 }).collect();
    let mut caught_up = flush(0, windows, Some(b"caught up"));
    caught_up.epoch = Some(epoch);
    caught_up.meters = meters;
    store.apply(caught_up).await.expect("a flush of every customer and meter");

    assert_eq!(store.known_customers(2 * CUSTOMERS as usize).await.expect("ids").len(), CUSTOMERS as usize);
    let silent = store.meters_silent_since(i64::MAX, 0, 4 * CUSTOMERS as usize).await.expect("read");
    assert_eq!(silent.len(), 2 * CUSTOMERS as usize, "every meter's last reading");
    assert_eq!(silent.last(), Some(&MeterLastReading { meter_id: 2 * CUSTOMERS, ts_ms: 2 * CUSTOMERS as i64 }));
    for customer_id in [1, CUSTOMERS / 2, CUSTOMERS] {
        let windows = store.customer_windows(customer_id).await.expect("read");
        let windows: Vec<(i64, f64, bool)> = windows.iter().map(|w| (w.slot.start_ms, w.aggregate.sum, w.closed)).collect();
        assert_eq!(windows, vec![(0, customer_id as f64, true), (60_000, 1.0, false)], "customer {customer_id}");
    }
    assert_eq!(store.load_checkpoint(&partition).await.expect("load").as_deref(), Some(&b"caught up"[..]));

    let restatement = Restatement {
        utility: Utility::Water,
        slot: WindowSlot { width_ms: 60_000, start_ms: 0 },
        version: 1,
        customers: (1..=CUSTOMERS).map(|customer_id| (customer_id, Aggregate::of(2.0 * customer_id as f64))).collect(),
        regions: vec![(region, Aggregate::of(3.0))],
    };
    store.restate(restatement).await.expect("a restatement of every customer");
    for customer_id in [1, CUSTOMERS / 2, CUSTOMERS] {
        let windows = store.customer_windows(customer_id).await.expect("read");
        let restated = windows.iter().find(|w| w.slot.start_ms == 0).map(|w| w.aggregate.sum);
        assert_eq!(restated, Some(2.0 * customer_id as f64), "customer {customer_id}'s restated window");
    }
    let regions = store.region_windows(60_000, 0).await.expect("read");
    assert_eq!(regions.iter().map(|w| w.window.aggregate.sum).collect::<Vec<_>>(), vec![3.0]);
}
