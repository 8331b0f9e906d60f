//! The meter registry as the gateways see it: the `<pipeline>.registry`
//! topic, read from its start and followed live.
//!
//! Each record holds one meter and all its installations
//! ([`RegistryRecord`]), keyed by the meter id, so the newest record of a key
//! is that meter's truth and a compacted topic loses nothing a reader needs.
//! A reader applies records in offset order and is ready once it has applied
//! every record that was on the topic when it started.

use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use auth_core::ports::{LogProducer, OutRecord, Polled, PortError, ReadingLog};
use auth_core::registry::{Registry, RegistryRecord};
use bytes::Bytes;

/// Meters the registry of this process knows.
pub const METRIC_METERS: &str = "auth_registry_meters";
/// Registry records this process applied, by `outcome` (applied, unreadable).
pub const METRIC_RECORDS: &str = "auth_registry_records_total";

/// How many records one registry write carries at most.
const RECORDS_PER_SEND: usize = 1_000;

/// The registry a process attributes readings with, replaced whole as the topic changes.
#[derive(Debug)]
pub struct LiveRegistry {
    current: RwLock<Arc<Registry>>,
    ready: tokio::sync::watch::Sender<bool>,
    /// Callers of [`LiveRegistry::sync`] waiting for the reader to reach the topic's end.
    syncs: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
    /// Whether a reader follows a topic (else [`LiveRegistry::sync`] has nothing to wait for).
    followed: std::sync::atomic::AtomicBool,
}

impl LiveRegistry {
    /// An empty registry that is not ready until [`follow`] has read the topic.
    pub fn loading() -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(Registry::default())),
            ready: tokio::sync::watch::channel(false).0,
            syncs: Mutex::new(Vec::new()),
            followed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A registry that is ready as given (tests, benchmarks).
    pub fn fixed(registry: Registry) -> Arc<Self> {
        let live = Self::loading();
        live.replace(registry);
        live
    }

    /// The registry now; later changes do not touch it.
    pub fn snapshot(&self) -> Arc<Registry> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the registry has read everything the topic held at its start.
    pub async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Waits until the registry holds every record the topic held when this
    /// was called (at most `timeout`), so that a meter registered before a
    /// reading was sent is not refused as unknown for the topic's delay.
    /// Returns whether it caught up.
    pub async fn sync(&self, timeout: Duration) -> bool {
        if !self.followed.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let (done, caught_up) = tokio::sync::oneshot::channel();
        self.syncs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(done);
        matches!(tokio::time::timeout(timeout, caught_up).await, Ok(Ok(())))
    }

    fn take_syncs(&self) -> Vec<tokio::sync::oneshot::Sender<()>> {
        std::mem::take(&mut *self.syncs.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn replace(&self, registry: Registry) {
        metrics::gauge!(METRIC_METERS).set(registry.meter_count() as f64);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(registry);
        self.ready.send_replace(true);
    }
}

/// Reads the registry topic from its start into `live`, then follows it
/// until `stop` completes. `group` must be this process's own: every reader
/// reads every record.
#[tracing::instrument(level = "info", skip_all, fields(%topic))]
pub async fn follow(
    log: Arc<dyn ReadingLog>,
    topic: String,
    group: String,
    live: Arc<LiveRegistry>,
    stop: impl Future<Output = ()>,
) -> Result<(), PortError> {
    let end = topic_end(log.as_ref(), &topic).await?;
    let mut consumer = log.consumer(&group, std::slice::from_ref(&topic))?;
    let mut registry = (*live.snapshot()).clone();
    let mut caught_up = end == 0;
    if caught_up {
        live.replace(registry.clone());
    }
    live.followed.store(true, std::sync::atomic::Ordering::Relaxed);
    // The next offset to apply, and the syncs waiting for an offset.
    let mut next = 0;
    let mut waiting: Vec<(u64, tokio::sync::oneshot::Sender<()>)> = Vec::new();
    tokio::pin!(stop);
    loop {
        let syncs = live.take_syncs();
        if !syncs.is_empty() {
            match log.end_offsets(&topic).await {
                Ok(ends) => {
                    let target = ends.first().copied().unwrap_or(0);
                    waiting.extend(syncs.into_iter().map(|done| (target, done)));
                }
                Err(err) => tracing::warn!(error = %err, "reading the registry topic's end failed"),
            }
        }
        let (reached, behind): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting).into_iter().partition(|(target, _)| *target <= next);
        waiting = behind;
        for (_, done) in reached {
            let _ = done.send(());
        }
        let polled = tokio::select! {
            biased;
            () = &mut stop => return Ok(()),
            polled = consumer.poll(RECORDS_PER_SEND, Duration::from_millis(500)) => polled,
        };
        match polled {
            Ok(Polled::Assigned(partitions)) => {
                // Every reader starts from the first record: the topic is the whole registry.
                for partition in &partitions {
                    consumer.seek(partition, 0)?;
                }
                next = 0;
            }
            Ok(Polled::Records(batches)) => {
                for record in batches.iter().flat_map(|batch| &batch.records) {
                    next = record.offset + 1;
                    match RegistryRecord::from_json(&record.value) {
                        Ok(meter) => {
                            registry.set_meter(meter.meter_id, meter.installations);
                            metrics::counter!(METRIC_RECORDS, "outcome" => "applied").increment(1);
                        }
                        Err(err) => {
                            tracing::warn!(offset = record.offset, error = %err, "unreadable registry record skipped");
                            metrics::counter!(METRIC_RECORDS, "outcome" => "unreadable").increment(1);
                        }
                    }
                }
                if caught_up || next >= end {
                    if !caught_up {
                        tracing::info!(meters = registry.meter_count(), "meter registry loaded");
                    }
                    caught_up = true;
                    live.replace(registry.clone());
                }
            }
            Ok(Polled::Revoked(_) | Polled::Lost(_) | Polled::Idle) => {}
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err, "reading the registry topic failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// How long a reader waits for its topic to appear (Kafka's metadata of a
/// topic just created reaches every broker and client within moments).
const TOPIC_WAIT: Duration = Duration::from_secs(30);

/// The next offset of the registry topic, waiting up to [`TOPIC_WAIT`] for the topic.
async fn topic_end(log: &dyn ReadingLog, topic: &str) -> Result<u64, PortError> {
    let deadline = tokio::time::Instant::now() + TOPIC_WAIT;
    loop {
        match log.end_offsets(topic).await {
            Ok(ends) => return Ok(ends.first().copied().unwrap_or(0)),
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %err, "the registry topic is not readable yet; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Writes meters to the registry topic; returns once the log holds them.
pub async fn publish(producer: &dyn LogProducer, topic: &str, meters: &[RegistryRecord]) -> Result<(), PortError> {
    for chunk in meters.chunks(RECORDS_PER_SEND) {
        let records = chunk
            .iter()
            .map(|meter| OutRecord { partition: 0, key: Bytes::from(meter.key()), value: Bytes::from(meter.to_json()) })
            .collect();
        producer.send(topic, records).await?;
    }
    Ok(())
}

/// The consumer group of one process's registry reader: its own, so it reads every record.
pub fn reader_group(pipeline: &str, role: &str) -> String {
    format!("{pipeline}.registry-reader.{role}.{:012x}", fastrand::u64(..) >> 16)
}
