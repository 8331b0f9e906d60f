//! Builds the adapters a role runs on from the spec: the servers it names
//! (`log.url`, `serving.url`), or the embedded ones where a role may run
//! without servers (`auth up`, benchmarks).
//!
//! [`LogConfig`] and [`StoreConfig`] are the typed configs (as Vector's
//! component configs are): taken from the spec, then built.

use std::sync::Arc;
use std::time::Duration;

use auth_core::PipelineSpec;
use auth_core::ports::{PortError, ReadingLog, ServingStore};
use auth_embedded::{EmbeddedLog, MemoryStore, Retention};
use auth_kafka::{KafkaLog, TopicSettings};
use auth_redis::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{field}: `auth {role}` needs {what} ({hint})")]
    Missing { field: &'static str, role: String, what: &'static str, hint: &'static str },
    #[error("{field}: {source}")]
    Port {
        field: String,
        #[source]
        source: PortError,
    },
}

pub type Result<T, E = AdapterError> = std::result::Result<T, E>;

/// Whether a role may run on the in-process adapters when the spec names no server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedded {
    Allowed,
    Refused,
}

/// The reading log a role runs on.
#[derive(Debug, Clone)]
pub enum LogConfig {
    Embedded(Retention),
    Kafka { url: String, topics: TopicSettings },
}

impl LogConfig {
    /// Kafka when the spec names it, else (only where `embedded` allows) the in-process log.
    pub fn from_spec(spec: &PipelineSpec, role: &str, embedded: Embedded) -> Result<Self> {
        match (&spec.log.url, embedded) {
            (Some(url), _) => Ok(LogConfig::Kafka { url: url.clone(), topics: TopicSettings::from_spec(&spec.log) }),
            (None, Embedded::Allowed) => Ok(LogConfig::Embedded(Retention {
                max_age: Duration::from_secs(spec.log.retention_secs),
                max_bytes_per_partition: spec.log.retention_bytes,
            })),
            (None, Embedded::Refused) => Err(AdapterError::Missing {
                field: "log.url",
                role: role.to_owned(),
                what: "Kafka",
                hint: "kafka://host:port in the spec, or --kafka-url",
            }),
        }
    }

    pub fn build(&self) -> Result<Arc<dyn ReadingLog>> {
        match self {
            LogConfig::Embedded(retention) => Ok(Arc::new(EmbeddedLog::new(*retention))),
            LogConfig::Kafka { url, topics } => Ok(Arc::new(
                KafkaLog::connect(url, topics.clone()).map_err(|source| AdapterError::Port { field: "log.url".into(), source })?,
            )),
        }
    }
}

/// The serving store a role runs on.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Memory { recent_windows: u32 },
    Redis { url: String, namespace: String, recent_windows: u32, widths_ms: Vec<i64> },
}

impl StoreConfig {
    /// Redis when the spec names it, else (only where `embedded` allows) the in-process store.
    pub fn from_spec(spec: &PipelineSpec, pipeline: &str, role: &str, embedded: Embedded) -> Result<Self> {
        match (&spec.serving.url, embedded) {
            (Some(url), _) => Ok(StoreConfig::Redis {
                url: url.clone(),
                namespace: pipeline.to_owned(),
                recent_windows: spec.serving.recent_windows,
                widths_ms: spec.windows.effective_sizes_ms(),
            }),
            (None, Embedded::Allowed) => Ok(StoreConfig::Memory { recent_windows: spec.serving.recent_windows }),
            (None, Embedded::Refused) => Err(AdapterError::Missing {
                field: "serving.url",
                role: role.to_owned(),
                what: "Redis",
                hint: "redis://host:port in the spec, or --redis-url",
            }),
        }
    }

    pub async fn build(&self) -> Result<Arc<dyn ServingStore>> {
        match self {
            StoreConfig::Memory { recent_windows } => Ok(Arc::new(MemoryStore::new(*recent_windows))),
            StoreConfig::Redis { url, namespace, recent_windows, widths_ms } => Ok(Arc::new(
                RedisStore::connect(url, namespace, *recent_windows, widths_ms)
                    .await
                    .map_err(|source| AdapterError::Port { field: format!("serving.url: connecting to {url}"), source })?,
            )),
        }
    }
}

/// The spec with the servers given on the command line in place of its
/// `log.url` and `serving.url`; every problem of the result, if any.
pub fn with_servers(mut spec: PipelineSpec, kafka_url: Option<&str>, redis_url: Option<&str>) -> Result<PipelineSpec, String> {
    if let Some(url) = kafka_url {
        spec.log.url = Some(url.to_owned());
    }
    if let Some(url) = redis_url {
        spec.serving.url = Some(url.to_owned());
    }
    let problems = spec.problems();
    if problems.is_empty() {
        return Ok(spec);
    }
    Err(problems.iter().map(|problem| format!("  - {problem}")).collect::<Vec<_>>().join("\n"))
}

/// The log of `spec` for `role`, built.
pub fn log(spec: &PipelineSpec, role: &str, embedded: Embedded) -> Result<Arc<dyn ReadingLog>> {
    LogConfig::from_spec(spec, role, embedded)?.build()
}

/// The serving store of `spec` for `role`, built.
pub async fn store(spec: &PipelineSpec, pipeline: &str, role: &str, embedded: Embedded) -> Result<Arc<dyn ServingStore>> {
    StoreConfig::from_spec(spec, pipeline, role, embedded)?.build().await
}

/// Creates the pipeline's utility topics and its dead-letter topic, or grows them.
pub async fn ensure_topics(log: &dyn ReadingLog, spec: &PipelineSpec, pipeline: &str) -> Result<()> {
    for topic in auth_core::pipeline_topics(pipeline, spec) {
        let created = if topic.compacted {
            log.ensure_compacted_topic(&topic.name).await
        } else {
            log.ensure_topic(&topic.name, topic.partitions).await
        };
        created.map_err(|source| AdapterError::Port { field: format!("creating topic {}", topic.name), source })?;
    }
    Ok(())
}
