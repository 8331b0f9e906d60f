//! Picks the adapters a role runs on: the servers the spec names, or the embedded ones.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use auth_core::PipelineSpec;
use auth_core::ports::{ReadingLog, ServingStore};
use auth_embedded::{EmbeddedLog, MemoryStore, Retention};
use auth_kafka::{KafkaLog, TopicSettings};
use auth_redis::RedisStore;
use clap::Args;

/// Server URLs that override the spec's `log.url` and `serving.url`.
#[derive(Args, Clone, Default)]
pub struct ServerArgs {
    /// Kafka to use instead of the spec's `log.url`, `kafka://host:port[,host:port]`.
    #[arg(long, env = "AUTH_KAFKA_URL")]
    pub kafka_url: Option<String>,
    /// Redis to use instead of the spec's `serving.url`, `redis://host:port[/db]`.
    #[arg(long, env = "AUTH_REDIS_URL")]
    pub redis_url: Option<String>,
}

impl ServerArgs {
    /// The spec with these URLs applied, checked again.
    pub fn apply(&self, mut spec: PipelineSpec) -> anyhow::Result<PipelineSpec> {
        if let Some(url) = &self.kafka_url {
            spec.log.url = Some(url.clone());
        }
        if let Some(url) = &self.redis_url {
            spec.serving.url = Some(url.clone());
        }
        let problems = spec.problems();
        anyhow::ensure!(
            problems.is_empty(),
            "invalid server URL:\n{}",
            problems.iter().map(|problem| format!("  - {problem}")).collect::<Vec<_>>().join("\n")
        );
        Ok(spec)
    }
}

/// Kafka when the spec names it, else (only where `embedded_allowed`) an in-process log.
pub fn log(spec: &PipelineSpec, role: &str, embedded_allowed: bool) -> anyhow::Result<Arc<dyn ReadingLog>> {
    match &spec.log.url {
        Some(url) => Ok(Arc::new(KafkaLog::connect(url, TopicSettings::from_spec(&spec.log))?)),
        None if embedded_allowed => Ok(Arc::new(EmbeddedLog::new(Retention {
            max_age: Duration::from_secs(spec.log.retention_secs),
            max_bytes_per_partition: spec.log.retention_bytes,
        }))),
        None => anyhow::bail!("log.url: `auth {role}` needs Kafka (kafka://host:port in the spec, or --kafka-url)"),
    }
}

/// Redis when the spec names it, else (only where `embedded_allowed`) an in-process store.
pub async fn store(
    spec: &PipelineSpec,
    pipeline: &str,
    role: &str,
    embedded_allowed: bool,
) -> anyhow::Result<Arc<dyn ServingStore>> {
    match &spec.serving.url {
        Some(url) => Ok(Arc::new(
            RedisStore::connect(url, pipeline, spec.serving.recent_windows, &spec.windows.effective_sizes_ms())
                .await
                .with_context(|| format!("serving.url: connecting to {url}"))?,
        )),
        None if embedded_allowed => Ok(Arc::new(MemoryStore::new(spec.serving.recent_windows))),
        None => anyhow::bail!("serving.url: `auth {role}` needs Redis (redis://host:port in the spec, or --redis-url)"),
    }
}

/// Creates the pipeline's utility topics and its dead-letter topic, or grows them.
pub async fn ensure_topics(log: &dyn ReadingLog, spec: &PipelineSpec, pipeline: &str) -> anyhow::Result<()> {
    for (topic, partitions) in auth_core::pipeline_topics(pipeline, spec) {
        log.ensure_topic(&topic, partitions).await.with_context(|| format!("creating topic {topic}"))?;
    }
    Ok(())
}
