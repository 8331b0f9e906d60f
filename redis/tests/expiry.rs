//! Bounded state on Redis: a customer whose windows never close still
//! expires, and the customer index forgets customers whose keys expired.

use auth_core::ports::{Aggregate, PartitionFlush, ServingStore, TopicPartition, WindowOwner, WindowSlot, WindowUpdate};
use auth_core::Utility;
use auth_redis::RedisStore;
use redis::AsyncCommands;

const DAY_MS: i64 = 86_400_000;

fn redis_url() -> String {
    std::env::var("AUTH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn open_window(customer_id: u64, start_ms: i64) -> PartitionFlush {
    PartitionFlush {
        partition: TopicPartition::new("expiry.water", 0),
        epoch: None,
        windows: vec![WindowUpdate {
            owner: WindowOwner::Customer(customer_id),
            utility: Utility::Water,
            slot: WindowSlot { width_ms: 60_000, start_ms },
            aggregate: Aggregate::of(1.0),
            closed: false,
        }],
        meters: Vec::new(),
        checkpoint: None,
    }
}

#[tokio::test]
#[ignore = "needs Redis: scripts/test.sh runs it"]
async fn silent_customers_expire_and_leave_the_customer_index() {
    let namespace = format!("expiry-{}", auth_core::now_ms());
    let store = RedisStore::connect(&redis_url(), &namespace, 60, &[60_000, 3_600_000, DAY_MS]).await.expect("Redis (scripts/services.sh)");
    let client = redis::Client::open(redis_url()).expect("URL");
    let mut redis = client.get_multiplexed_async_connection().await.expect("Redis");
    let index = format!("auth:{namespace}:customers");
    // A customer last written 61 days ago: longer than a day window's lifetime (60 days).
    let long_ago = auth_core::now_ms() - 61 * DAY_MS;
    let _: () = redis.zadd(&index, 999u64, long_ago).await.expect("ZADD");

    // One reading of customer 7, whose window never closes: its hash still has a lifetime.
    store.apply(open_window(7, 0)).await.expect("flush");
    let hash = format!("auth:{namespace}:customer:7");
    let ttl: i64 = redis.ttl(&hash).await.expect("TTL");
    assert!((1..=DAY_MS / 1_000).contains(&ttl), "the open-only hash expires within a day: TTL {ttl}");
    assert_eq!(store.known_customers(10).await.expect("index"), [7], "the index forgot the customer whose keys expired");

    // Later flushes of open windows do not renew the lifetime.
    let _: () = redis.expire(&hash, 100).await.expect("EXPIRE");
    store.apply(open_window(7, 60_000)).await.expect("flush");
    let ttl: i64 = redis.ttl(&hash).await.expect("TTL");
    assert!((1..=100).contains(&ttl), "TTL {ttl}");
    store.delete_namespace().await.expect("clean up");
}
