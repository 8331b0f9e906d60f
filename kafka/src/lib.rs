//! The reading log on Apache Kafka, through `rdkafka` (librdkafka).
//!
//! - Producer: idempotent, `acks=all`, many records in flight; `send` returns
//!   once the broker acknowledged every record.
//! - Consumer: a member of a consumer group with the eager protocol and
//!   auto-commit off. On an assignment the partitions are not fetched until the
//!   application has positioned them ([`LogConsumer::seek`] with the offsets of
//!   its checkpoints); librdkafka waits for that `assign` call
//!   ("wait-assign-call"), so no record of a new partition arrives before its
//!   state is restored. A revocation stops the partitions at once.
//! - Topics: created with the pipeline's partitions, replication and retention;
//!   grown, never shrunk.

mod consumer;
mod error;
mod rediscovery;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use auth_core::ports::{LogConsumer, LogProducer, OutRecord, PortError, ReadingLog, Result};
use auth_core::spec::LogSpec;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication, TopicResult};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rediscovery::{Bootstrap, ProducerContext};

pub use consumer::KafkaConsumer;
use error::port_error;

/// How long metadata and offset requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Topic settings the log applies when it creates a topic.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    pub replication_factor: u16,
    pub retention_ms: u64,
    pub retention_bytes: u64,
}

impl TopicSettings {
    pub fn from_spec(log: &LogSpec) -> Self {
        Self {
            replication_factor: log.replication_factor,
            retention_ms: log.retention_secs.saturating_mul(1_000),
            retention_bytes: log.retention_bytes,
        }
    }
}

/// A Kafka cluster as the reading log.
pub struct KafkaLog {
    bootstrap: String,
    topics: TopicSettings,
    producer: Arc<KafkaProducer>,
    admin: AdminClient<DefaultClientContext>,
}

impl KafkaLog {
    /// Connects to the cluster at `url` (`kafka://host:port[,host:port...]`).
    /// Clients connect lazily; the first request tells whether the cluster answers.
    pub fn connect(url: &str, topics: TopicSettings) -> Result<Self> {
        let bootstrap = auth_core::endpoint::kafka_bootstrap(url)
            .map_err(|message| PortError::Rejected { what: "Kafka URL".into(), message })?;
        let (servers, context) = Bootstrap::of(&bootstrap)
            .ok_or_else(|| PortError::Rejected { what: "Kafka URL".into(), message: "holds a NUL byte".into() })?;
        let producer: FutureProducer<ProducerContext> = client_config(&bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "10")
            .set("batch.num.messages", "10000")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.timeout.ms", "60000")
            .set("statistics.interval.ms", rediscovery::STATISTICS_INTERVAL_MS)
            .create_with_context(context)
            .map_err(|err| port_error("Kafka producer", err))?;
        let admin = client_config(&bootstrap).create().map_err(|err| port_error("Kafka admin client", err))?;
        tracing::info!(%bootstrap, "Kafka clients configured");
        Ok(Self { bootstrap, topics, producer: Arc::new(KafkaProducer { producer, servers }), admin })
    }

    /// Deletes topics and their records; topics that do not exist are skipped.
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = self.admin.delete_topics(topics, &options).await.map_err(|err| port_error("topic deletion", err))?;
        admin_outcome("deleting topic", results, RDKafkaErrorCode::UnknownTopicOrPartition)
    }

    async fn topic_partitions(&self, topic: &str) -> Result<Option<u32>> {
        let producer = Arc::clone(&self.producer);
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            producer.producer.client().fetch_metadata(Some(&name), REQUEST_TIMEOUT)
        })
        .await
        .map_err(|err| PortError::Unavailable { what: "Kafka metadata".into(), message: err.to_string() })?
        .map_err(|err| port_error(&format!("metadata of topic {topic}"), err))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
        match found.error() {
            None => Ok(Some(found.partitions().len() as u32)),
            Some(code) if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition => Ok(None),
            Some(code) => Err(port_error(
                &format!("metadata of topic {topic}"),
                KafkaError::MetadataFetch(RDKafkaErrorCode::from(code)),
            )),
        }
    }
}

/// The per-topic results of an admin request: an error other than `done_already`
/// (the state asked for holds already) fails it.
fn admin_outcome(action: &str, results: Vec<TopicResult>, done_already: RDKafkaErrorCode) -> Result<()> {
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, code)) if code == done_already => {}
            Err((topic, code)) => return Err(port_error(&format!("{action} {topic}"), KafkaError::AdminOp(code))),
        }
    }
    Ok(())
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "auth")
        .set("log_level", "4")
        // librdkafka refreshes its broker and leader metadata every 5 minutes by
        // default; a producer whose cache missed a partition's new leader after
        // a topic creation or a broker restart ("new leader-1 not found in
        // cache", seen in CI) held its records until `message.timeout.ms`.
        // A 10 s refresh bounds that wait; it costs one metadata request per
        // client every 10 s.
        .set("topic.metadata.refresh.interval.ms", "10000");
    config
}

#[async_trait]
impl ReadingLog for KafkaLog {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let what = format!("topic {topic}");
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        match self.topic_partitions(topic).await? {
            Some(existing) if existing >= partitions => Ok(()),
            Some(existing) => {
                tracing::info!(topic, from = existing, to = partitions, "growing topic");
                let grow = NewPartitions::new(topic, partitions as usize);
                let results = self.admin.create_partitions([&grow], &options).await.map_err(|e| port_error(&what, e))?;
                admin_outcome("growing topic", results, RDKafkaErrorCode::InvalidPartitions)
            }
            None => {
                let retention_ms = self.topics.retention_ms.to_string();
                let retention_bytes = self.topics.retention_bytes.to_string();
                let new = NewTopic::new(
                    topic,
                    partitions as i32,
                    TopicReplication::Fixed(i32::from(self.topics.replication_factor)),
                )
                .set("retention.ms", &retention_ms)
                .set("retention.bytes", &retention_bytes)
                // The broker's clock, not the producer's, dates each record:
                // the stream measures how far ahead a reading is against it,
                // the same way on every replay.
                .set("message.timestamp.type", "LogAppendTime");
                tracing::info!(topic, partitions, "creating topic");
                let results = self.admin.create_topics([&new], &options).await.map_err(|e| port_error(&what, e))?;
                admin_outcome("creating topic", results, RDKafkaErrorCode::TopicAlreadyExists)
            }
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn ensure_compacted_topic(&self, topic: &str) -> Result<()> {
        if self.topic_partitions(topic).await?.is_some() {
            return Ok(());
        }
        let what = format!("topic {topic}");
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(i32::from(self.topics.replication_factor)))
            .set("cleanup.policy", "compact")
            .set("message.timestamp.type", "LogAppendTime");
        tracing::info!(topic, "creating compacted topic");
        let results = self.admin.create_topics([&new], &options).await.map_err(|e| port_error(&what, e))?;
        admin_outcome("creating topic", results, RDKafkaErrorCode::TopicAlreadyExists)
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        self.topic_partitions(topic)
            .await?
            .ok_or_else(|| PortError::Rejected { what: format!("topic {topic}"), message: "does not exist".into() })
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        let partitions = self.partitions(topic).await?;
        let producer = Arc::clone(&self.producer);
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|partition| {
                    let (_, high) =
                        producer.producer.client().fetch_watermarks(&name, partition as i32, REQUEST_TIMEOUT)?;
                    Ok(high.max(0) as u64)
                })
                .collect::<Result<Vec<u64>, KafkaError>>()
        })
        .await
        .map_err(|err| PortError::Unavailable { what: "Kafka offsets".into(), message: err.to_string() })?
        .map_err(|err| port_error(&format!("end offsets of topic {topic}"), err))
    }

    fn producer(&self) -> Result<Arc<dyn LogProducer>> {
        Ok(Arc::clone(&self.producer) as Arc<dyn LogProducer>)
    }

    fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn LogConsumer>> {
        Ok(Box::new(KafkaConsumer::subscribe(client_config(&self.bootstrap), group, topics)?))
    }
}

/// An idempotent `acks=all` producer keeping many records in flight.
pub struct KafkaProducer {
    producer: FutureProducer<ProducerContext>,
    servers: Bootstrap,
}

#[async_trait]
impl LogProducer for KafkaProducer {
    async fn send(&self, topic: &str, records: Vec<OutRecord>) -> Result<()> {
        self.servers.restore_if_lost(self.producer.client());
        let mut in_flight = std::collections::VecDeque::with_capacity(records.len());
        for record in &records {
            let mut pending =
                FutureRecord::to(topic).partition(record.partition as i32).key(&record.key[..]).payload(&record.value[..]);
            loop {
                match self.producer.send_result(pending) {
                    Ok(delivery) => {
                        in_flight.push_back(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        pending = returned;
                        match in_flight.pop_front() {
                            Some(oldest) => delivered(topic, oldest.await)?,
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((err, _)) => return Err(port_error(&format!("producing to {topic}"), err)),
                }
            }
        }
        for delivery in in_flight {
            delivered(topic, delivery.await)?;
        }
        Ok(())
    }
}

fn delivered<Canceled>(topic: &str, outcome: Result<OwnedDeliveryResult, Canceled>) -> Result<()> {
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((err, _))) => Err(port_error(&format!("producing to {topic}"), err)),
        Err(_) => Err(PortError::Closed(format!("Kafka producer for {topic}"))),
    }
}
