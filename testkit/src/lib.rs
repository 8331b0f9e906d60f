//! What the test suites share: the backends a suite runs on.
//!
//! [`Backend::embedded`] gives the in-process adapters; [`Backend::real`] gives
//! Kafka and Redis as `scripts/services.sh up` starts them (addresses from
//! `AUTH_KAFKA_URL` and `AUTH_REDIS_URL`, loopback defaults). Tests on the real
//! servers are `#[ignore]`d in a plain `cargo test` and run by
//! `scripts/test.sh`, which sets `AUTH_IT=1` and includes ignored tests; a
//! server that does not answer fails them with a message saying so.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use auth_core::Utility;
use auth_core::spec::PipelineSpec;
use auth_core::ports::{LogRecord, Polled, ReadingLog, ServingStore};
use auth_embedded::{EmbeddedLog, MemoryStore, Retention};
use auth_kafka::{KafkaLog, TopicSettings};
use auth_redis::RedisStore;

pub fn kafka_url() -> String {
    std::env::var("AUTH_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:9092".into())
}

pub fn redis_url() -> String {
    std::env::var("AUTH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The PostgreSQL server of `scripts/services.sh` (`AUTH_POSTGRES_URL`), as a user who may create databases.
pub fn postgres_url() -> String {
    std::env::var("AUTH_POSTGRES_URL").unwrap_or_else(|_| "postgres://auth:auth@127.0.0.1:5432/auth".into())
}

/// The MariaDB server of `scripts/services.sh` (`AUTH_MYSQL_URL`), as a user who may create databases.
pub fn mysql_url() -> String {
    std::env::var("AUTH_MYSQL_URL").unwrap_or_else(|_| "mysql://auth:auth@127.0.0.1:3306/auth".into())
}

/// A database of its own on the server `admin_url` names (PostgreSQL or
/// MariaDB, as a user who may create databases); returns its URL.
pub async fn fresh_database(admin_url: &str, name: &str) -> String {
    let database = unique_name(name).replace('-', "_");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(admin_url)
        .await
        .unwrap_or_else(|err| panic!("{admin_url} does not answer ({err}): start it with `scripts/services.sh up`"));
    sqlx::query(&format!("CREATE DATABASE {database}")).execute(&pool).await.unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/{database}")
}

/// A folder of its own in the S3 server's test bucket. The server is the one
/// `AWS_ENDPOINT_URL` names (with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`,
/// as `scripts/test.sh` exports them); the bucket is `AUTH_S3_BUCKET`.
pub fn s3_url(folder: &str) -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL names no S3 server: run the tests with scripts/test.sh, or export it");
    require_server("The S3 server", endpoint.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/'));
    let bucket = std::env::var("AUTH_S3_BUCKET").unwrap_or_else(|_| "auth-test".into());
    format!("s3://{bucket}/{folder}")
}

/// A name no earlier run used, for topics, groups and store namespaces on shared servers.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// Panics with a clear message unless a server answers at `host:port`.
pub fn require_server(what: &str, address: &str) {
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|socket| TcpStream::connect_timeout(&socket, Duration::from_secs(2)).is_ok());
    assert!(reachable, "{what} does not answer at {address}: start it with `scripts/services.sh up`");
}

/// Where a suite's log and stores live. A real backend deletes its topics
/// and store keys when dropped, unless the test failed (they are kept to look at).
pub struct Backend {
    pub log: Arc<dyn ReadingLog>,
    /// Names the topics, groups and store namespaces of this test; store
    /// namespaces are this name or start with `<pipeline>:`.
    pub pipeline: String,
    redis: Option<String>,
    kafka: Option<Arc<KafkaLog>>,
    stores: AtomicU32,
}

impl Backend {
    pub fn embedded(pipeline: &str) -> Self {
        let retention = Retention { max_age: Duration::from_secs(86_400), max_bytes_per_partition: 1 << 32 };
        Self {
            log: Arc::new(EmbeddedLog::new(retention)),
            pipeline: pipeline.into(),
            redis: None,
            kafka: None,
            stores: AtomicU32::new(0),
        }
    }

    /// Kafka and Redis, with a pipeline name of its own so runs never meet.
    pub fn real(pipeline: &str) -> Self {
        let kafka = kafka_url();
        let bootstrap = auth_core::endpoint::kafka_bootstrap(&kafka).unwrap();
        require_server("Kafka", bootstrap.split(',').next().unwrap());
        let redis = redis_url();
        let redis_address = redis.trim_start_matches("redis://").split('/').next().unwrap().to_owned();
        require_server("Redis", &redis_address);
        let settings = TopicSettings { replication_factor: 1, retention_ms: 86_400_000, retention_bytes: 1 << 30 };
        let log = Arc::new(KafkaLog::connect(&kafka, settings).unwrap());
        Self {
            log: Arc::clone(&log) as Arc<dyn ReadingLog>,
            pipeline: unique_name(pipeline),
            redis: Some(redis),
            kafka: Some(log),
            stores: AtomicU32::new(0),
        }
    }

    pub fn is_real(&self) -> bool {
        self.redis.is_some()
    }

    /// A serving store no other store of this backend shares, keeping a day of minutes.
    pub async fn new_store(&self) -> Arc<dyn ServingStore> {
        self.new_store_keeping(1_440).await
    }

    /// A fresh serving store keeping `recent_windows` per key and size.
    pub async fn new_store_keeping(&self, recent_windows: u32) -> Arc<dyn ServingStore> {
        let number = self.stores.fetch_add(1, Ordering::Relaxed);
        match &self.redis {
            None => Arc::new(MemoryStore::new(recent_windows)),
            Some(url) => {
                let namespace = format!("{}:store{number}", self.pipeline);
                let widths = PipelineSpec::default().windows.effective_sizes_ms();
                Arc::new(RedisStore::connect(url, &namespace, recent_windows, &widths).await.unwrap())
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let (Some(kafka), Some(redis)) = (self.kafka.take(), self.redis.take()) else { return };
        if std::thread::panicking() {
            eprintln!("test data kept: topics {0}.*, Redis keys auth:{0}:*", self.pipeline);
            return;
        }
        let pipeline = self.pipeline.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut topics: Vec<String> =
                    Utility::ALL.iter().map(|&utility| auth_core::utility_topic(&pipeline, utility)).collect();
                topics.push(auth_core::dead_letter_topic(&pipeline));
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                if let Err(err) = kafka.delete_topics(&names).await {
                    eprintln!("could not delete the test topics of {pipeline}: {err}");
                }
                match RedisStore::connect(&redis, &pipeline, 1, &[]).await {
                    Ok(store) => {
                        if let Err(err) = store.delete_namespace().await {
                            eprintln!("could not delete the Redis keys of {pipeline}: {err}");
                        }
                    }
                    Err(err) => eprintln!("could not delete the Redis keys of {pipeline}: {err}"),
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Every record of `topic` up to its current end, with its partition, read by
/// a consumer of `group` (a group of its own starts at the beginning).
pub async fn read_topic(log: &dyn ReadingLog, topic: &str, group: &str) -> Vec<(u32, LogRecord)> {
    let end: u64 = log.end_offsets(topic).await.expect("end offsets").iter().sum();
    let mut consumer = log.consumer(group, &[topic.to_owned()]).expect("consumer");
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (records.len() as u64) < end {
        assert!(tokio::time::Instant::now() < deadline, "read {} of {end} records of {topic}", records.len());
        if let Polled::Records(batches) = consumer.poll(10_000, Duration::from_millis(200)).await.expect("poll") {
            for batch in batches {
                let partition = batch.partition.partition;
                records.extend(batch.records.into_iter().map(|record| (partition, record)));
            }
        }
    }
    records
}

/// Everything a user can read from a serving store, in a comparable form:
/// window -> (sum bits, count, min bits, max bits, closed).
pub type Dump = BTreeMap<String, (u64, u64, u64, u64, bool)>;

/// Reads every customer's windows and the region windows of `widths`.
pub async fn dump(store: &dyn ServingStore, widths: &[i64]) -> Dump {
    let mut out = Dump::new();
    for customer in store.known_customers(usize::MAX).await.unwrap() {
        for window in store.customer_windows(customer).await.unwrap() {
            let a = window.aggregate;
            out.insert(
                format!("customer {customer} {} {:?}", window.utility, window.slot),
                (a.sum.to_bits(), a.count, a.min.to_bits(), a.max.to_bits(), window.closed),
            );
        }
    }
    for &width in widths {
        for window in store.region_windows(width, 0).await.unwrap() {
            let a = window.window.aggregate;
            out.insert(
                format!("region {} {} {:?}", window.region, window.window.utility, window.window.slot),
                (a.sum.to_bits(), a.count, a.min.to_bits(), a.max.to_bits(), window.window.closed),
            );
        }
    }
    out
}
