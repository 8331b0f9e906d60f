//! The stream processor: consumes the utility topics as a member of a consumer
//! group, keeps window state per assigned partition, flushes changed windows to
//! the serving store and checkpoints state with offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_core::ports::{
    LogConsumer, LogProducer, OutRecord, PartitionFlush, PartitionRecords, Polled, PortError, ReadingLog,
    ServingStore, TopicPartition,
};
use auth_core::spec::PipelineSpec;
use auth_core::{Utility, codec, dead_letter_topic, utility_topic};
use bytes::Bytes;

use crate::checkpoint::{self, CheckpointError};
use crate::metrics as names;
use crate::watermark::WatermarkTracker;
use crate::window::{PartitionCounts, PartitionWindows, WindowConfig};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading log: {0}")]
    Log(#[source] PortError),
    #[error("serving store: {0}")]
    Store(#[source] PortError),
    #[error("dead-letter topic {topic}: {source}")]
    DeadLetter { topic: String, source: PortError },
    #[error("checkpoint of {partition}: {source}")]
    Checkpoint { partition: TopicPartition, source: CheckpointError },
}

impl StreamError {
    /// Whether the processor may succeed by trying again (a server was unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            StreamError::Log(err) | StreamError::Store(err) | StreamError::DeadLetter { source: err, .. } => {
                err.is_retryable()
            }
            StreamError::Checkpoint { .. } => false,
        }
    }
}

pub type Result<T, E = StreamError> = std::result::Result<T, E>;

/// Settings of one processor, taken from the pipeline spec.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub pipeline: String,
    pub group: String,
    pub utilities: Vec<Utility>,
    pub windows: WindowConfig,
    pub idle_timeout: Duration,
    pub flush_interval: Duration,
    pub checkpoint_interval: Duration,
    pub max_poll_records: usize,
}

impl ProcessorConfig {
    pub fn from_spec(pipeline: &str, spec: &PipelineSpec) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            group: format!("{pipeline}.stream"),
            utilities: spec.utilities.clone(),
            windows: WindowConfig {
                sizes_ms: spec.windows.effective_sizes_ms(),
                out_of_orderness_ms: i64::from(spec.windows.out_of_orderness_secs) * 1_000,
                allowed_lateness_ms: i64::from(spec.windows.allowed_lateness_secs) * 1_000,
            },
            idle_timeout: Duration::from_secs(u64::from(spec.windows.idle_timeout_secs)),
            flush_interval: Duration::from_millis(spec.stream.flush_interval_ms),
            checkpoint_interval: Duration::from_millis(spec.stream.checkpoint_interval_ms),
            max_poll_records: spec.stream.max_poll_records as usize,
        }
    }

    pub fn topics(&self) -> Vec<String> {
        self.utilities.iter().map(|&utility| utility_topic(&self.pipeline, utility)).collect()
    }
}

struct Assigned {
    windows: PartitionWindows,
    next_offset: u64,
    dead_letters: Vec<OutRecord>,
    changed_since_checkpoint: bool,
    /// Size of the last checkpoint, to size the next one's buffer.
    checkpoint_bytes: usize,
    reported: PartitionCounts,
}

/// What one [`Processor::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Records(usize),
    Rebalanced,
    Idle,
}

pub struct Processor {
    config: ProcessorConfig,
    consumer: Box<dyn LogConsumer>,
    store: Arc<dyn ServingStore>,
    dead_letters: Arc<dyn LogProducer>,
    dead_letter_topic: String,
    topic_utility: HashMap<Arc<str>, Utility>,
    assigned: BTreeMap<TopicPartition, Assigned>,
    watermarks: WatermarkTracker,
    /// The group has given this processor its first assignment (possibly empty).
    joined: bool,
    last_flush: Instant,
    last_checkpoint: Instant,
}

impl Processor {
    /// Joins the processor group on the pipeline's utility topics.
    pub fn new(config: ProcessorConfig, log: &dyn ReadingLog, store: Arc<dyn ServingStore>) -> Result<Self> {
        let topics = config.topics();
        let consumer = log.consumer(&config.group, &topics).map_err(StreamError::Log)?;
        let dead_letters = log.producer().map_err(StreamError::Log)?;
        let topic_utility = config
            .utilities
            .iter()
            .map(|&utility| (Arc::from(utility_topic(&config.pipeline, utility)), utility))
            .collect();
        let now = Instant::now();
        Ok(Self {
            dead_letter_topic: dead_letter_topic(&config.pipeline),
            watermarks: WatermarkTracker::new(config.idle_timeout),
            config,
            consumer,
            store,
            dead_letters,
            topic_utility,
            assigned: BTreeMap::new(),
            joined: false,
            last_flush: now,
            last_checkpoint: now,
        })
    }

    /// Counts over every assigned partition (restored from checkpoints included).
    pub fn counts(&self) -> PartitionCounts {
        let mut total = PartitionCounts::default();
        for state in self.assigned.values() {
            total += state.windows.counts();
        }
        total
    }

    /// Next offset to process of each assigned partition.
    pub fn positions(&self) -> Vec<(TopicPartition, u64)> {
        self.assigned.iter().map(|(tp, state)| (tp.clone(), state.next_offset)).collect()
    }

    /// Polls once and processes what came; flushes when the flush interval passed.
    pub async fn step(&mut self) -> Result<Step> {
        let timeout = self.config.flush_interval.min(Duration::from_millis(200));
        let polled = self.consumer.poll(self.config.max_poll_records, timeout).await.map_err(StreamError::Log)?;
        let step = match polled {
            Polled::Assigned(partitions) => {
                self.assign(partitions).await?;
                Step::Rebalanced
            }
            Polled::Revoked(partitions) => {
                for partition in &partitions {
                    tracing::info!(%partition, "partition revoked; its new owner resumes from the last checkpoint");
                    self.assigned.remove(partition);
                    self.watermarks.forget(partition);
                }
                metrics::gauge!(names::ASSIGNED_PARTITIONS).set(self.assigned.len() as f64);
                Step::Rebalanced
            }
            Polled::Records(batches) => {
                let mut count = 0;
                let now = Instant::now();
                for batch in batches {
                    count += batch.records.len();
                    self.process(batch, now);
                }
                Step::Records(count)
            }
            Polled::Idle => Step::Idle,
        };
        if self.last_flush.elapsed() >= self.config.flush_interval {
            let checkpoint = self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
            self.flush(checkpoint).await?;
        }
        Ok(step)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(partitions = partitions.len()))]
    async fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        self.joined = true;
        for partition in partitions {
            let Some(&utility) = self.topic_utility.get(&partition.topic) else { continue };
            let saved = self.store.load_checkpoint(&partition).await.map_err(StreamError::Store)?;
            let (windows, next_offset) = match saved {
                Some(bytes) => checkpoint::decode(&bytes, utility, self.config.windows.clone())
                    .map_err(|source| StreamError::Checkpoint { partition: partition.clone(), source })?,
                None => (PartitionWindows::new(utility, self.config.windows.clone()), 0),
            };
            tracing::info!(%partition, next_offset, open_windows = windows.open_windows(), "partition assigned");
            self.consumer.seek(&partition, next_offset).map_err(StreamError::Log)?;
            let reported = windows.counts();
            self.assigned.insert(
                partition,
                Assigned {
                    windows,
                    next_offset,
                    dead_letters: Vec::new(),
                    changed_since_checkpoint: false,
                    checkpoint_bytes: 0,
                    reported,
                },
            );
        }
        metrics::gauge!(names::ASSIGNED_PARTITIONS).set(self.assigned.len() as f64);
        Ok(())
    }

    fn process(&mut self, batch: PartitionRecords, now: Instant) {
        let Some(state) = self.assigned.get_mut(&batch.partition) else { return };
        let utility = state.windows.utility;
        for record in batch.records {
            if record.offset < state.next_offset {
                continue;
            }
            state.next_offset = record.offset + 1;
            state.changed_since_checkpoint = true;
            let reason = match codec::decode(&record.value) {
                Ok(reading) if reading.utility != utility => {
                    format!("a {} reading on the {} topic", reading.utility, utility)
                }
                Ok(reading) => {
                    let problems = reading.problems(None);
                    if problems.is_empty() {
                        state.windows.add(&reading);
                        continue;
                    }
                    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                }
                Err(err) => err.to_string(),
            };
            state.windows.count_malformed();
            let letter = serde_json::json!({
                "topic": &*batch.partition.topic,
                "partition": batch.partition.partition,
                "offset": record.offset,
                "reason": reason,
                "valueHex": hex::encode(&record.value),
            });
            state.dead_letters.push(OutRecord { partition: 0, key: record.key, value: Bytes::from(letter.to_string()) });
        }
        self.watermarks.observe(&batch.partition, state.windows.watermark_ms(), now);
    }

    /// Writes every changed window to the serving store, per partition in one
    /// atomic step; with `checkpoint`, the same step stores the partition's
    /// state and next offset (after its dead letters are durable).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn flush(&mut self, checkpoint: bool) -> Result<()> {
        let started = Instant::now();
        let pipeline_watermark = self.watermarks.operator_watermark(started);
        let mut writes = tokio::task::JoinSet::new();
        let mut written = Vec::new();
        for (partition, state) in &mut self.assigned {
            let windows = state.windows.take_updates();
            let write_checkpoint = checkpoint && state.changed_since_checkpoint;
            if write_checkpoint && !state.dead_letters.is_empty() {
                let letters = std::mem::take(&mut state.dead_letters);
                let count = letters.len() as u64;
                self.dead_letters.send(&self.dead_letter_topic, letters).await.map_err(|source| {
                    StreamError::DeadLetter { topic: self.dead_letter_topic.clone(), source }
                })?;
                metrics::counter!(names::DEAD_LETTERS).increment(count);
            }
            let blob = if write_checkpoint {
                let encoded = checkpoint::encode(&state.windows, state.next_offset, state.checkpoint_bytes)
                    .map_err(|source| StreamError::Checkpoint { partition: partition.clone(), source })?;
                state.checkpoint_bytes = encoded.len();
                Some(Bytes::from(encoded))
            } else {
                None
            };
            if windows.is_empty() && blob.is_none() {
                continue;
            }
            let store = Arc::clone(&self.store);
            let flush = PartitionFlush { partition: partition.clone(), windows, checkpoint: blob };
            writes.spawn(async move { store.apply(flush).await });
            written.push((partition.clone(), write_checkpoint));
        }
        // The partitions' writes go out together, so that the store works on
        // one while the next is being encoded; the flush is done when all are.
        while let Some(outcome) = writes.join_next().await {
            outcome
                .map_err(|err| StreamError::Store(PortError::Closed(format!("serving-store write task: {err}"))))?
                .map_err(StreamError::Store)?;
        }
        for (partition, wrote_checkpoint) in written {
            if let Some(state) = self.assigned.get_mut(&partition) {
                if wrote_checkpoint {
                    state.changed_since_checkpoint = false;
                }
                report(state);
            }
        }
        if checkpoint {
            self.last_checkpoint = Instant::now();
            self.commit_positions().await;
        }
        self.last_flush = Instant::now();
        if let Some(watermark) = pipeline_watermark {
            metrics::gauge!(names::WATERMARK).set(watermark as f64);
        }
        metrics::gauge!(names::CHECKPOINT_AGE).set(self.last_checkpoint.elapsed().as_secs_f64());
        metrics::histogram!(names::FLUSH_DURATION).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Tells the group how far the checkpoints got, for tools that watch its
    /// lag; the processor itself resumes from its checkpoints, so a failed
    /// commit only delays that view.
    async fn commit_positions(&mut self) {
        let positions: Vec<(TopicPartition, u64)> = self
            .assigned
            .iter()
            .filter(|(_, state)| !state.changed_since_checkpoint && state.next_offset > 0)
            .map(|(partition, state)| (partition.clone(), state.next_offset))
            .collect();
        if positions.is_empty() {
            return;
        }
        if let Err(err) = self.consumer.commit(&positions).await {
            tracing::debug!(%err, "committing checkpointed offsets to the group failed");
        }
    }

    /// Drops the state of every assigned partition and restores it from the
    /// last checkpoints, continuing at their offsets: after a failed write the
    /// processor cannot tell what reached the store, so it replays, which
    /// gives exactly the results of a run without the failure.
    #[tracing::instrument(level = "info", skip(self), fields(partitions = self.assigned.len()))]
    pub async fn restore_from_checkpoints(&mut self) -> Result<()> {
        let partitions: Vec<TopicPartition> = self.assigned.keys().cloned().collect();
        self.assigned.clear();
        for partition in &partitions {
            self.watermarks.forget(partition);
        }
        self.assign(partitions).await
    }

    /// Whether the group gave this processor its partitions and every one of
    /// them (if any) has been processed up to the log's end.
    pub async fn caught_up(&self, log: &dyn ReadingLog) -> Result<bool> {
        Ok(self.joined && self.lag(log).await? == 0)
    }

    /// Records in the log after the positions of the assigned partitions.
    pub async fn lag(&self, log: &dyn ReadingLog) -> Result<u64> {
        let mut ends: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        let mut lag = 0u64;
        for (partition, state) in &self.assigned {
            if !ends.contains_key(&partition.topic) {
                let topic_ends = log.end_offsets(&partition.topic).await.map_err(StreamError::Log)?;
                ends.insert(Arc::clone(&partition.topic), topic_ends);
            }
            let end = ends[&partition.topic].get(partition.partition as usize).copied().unwrap_or(0);
            lag += end.saturating_sub(state.next_offset);
        }
        metrics::gauge!(names::CONSUMER_LAG).set(lag as f64);
        Ok(lag)
    }

    /// Processes until every assigned partition is at the log's end, then
    /// flushes and checkpoints.
    pub async fn drain(&mut self, log: &dyn ReadingLog) -> Result<()> {
        loop {
            if self.step().await? == Step::Idle && self.caught_up(log).await? {
                return self.flush(true).await;
            }
        }
    }

    /// Runs until `shutdown` resolves, then flushes and checkpoints. A server
    /// that is unavailable is waited for (with growing pauses), after which
    /// the processor restores its partitions from their checkpoints; any
    /// other error ends the run.
    pub async fn run(mut self, log: Arc<dyn ReadingLog>, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut last_lag_check: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            // Shutdown is only looked at between steps: a step cancelled halfway
            // would lose records it took from the log or windows it took for the store.
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = std::future::ready(()) => {}
            }
            let mut outcome = self.step().await.map(drop);
            if outcome.is_ok() && last_lag_check.is_none_or(|at| at.elapsed() >= LAG_CHECK_INTERVAL) {
                last_lag_check = Some(Instant::now());
                outcome = self.lag(log.as_ref()).await.map(|lag| {
                    let counts = self.counts();
                    tracing::info!(
                        partitions = self.assigned.len(),
                        lag,
                        counted = counts.counted + counts.counted_late,
                        too_late = counts.too_late,
                        "progress"
                    );
                });
            }
            match outcome {
                Ok(()) => failures = 0,
                Err(mut err) if err.is_retryable() => {
                    metrics::counter!(names::RECOVERIES).increment(1);
                    loop {
                        let pause = retry_pause(failures);
                        failures += 1;
                        tracing::warn!(error = %err, ?pause, "a server is unavailable; restoring from the checkpoints after a pause");
                        tokio::select! {
                            () = &mut shutdown => return Err(err),
                            () = tokio::time::sleep(pause) => {}
                        }
                        match self.restore_from_checkpoints().await {
                            Ok(()) => break,
                            Err(again) if again.is_retryable() => err = again,
                            Err(fatal) => return Err(fatal),
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        }
        tracing::info!("stream processor stopping: final flush and checkpoint");
        self.flush(true).await
    }
}

/// How often a running processor measures its consumer lag.
const LAG_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The pause before the `failures`-th retry: 100 ms, doubling, at most 10 s.
fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(7))).min(Duration::from_secs(10))
}

fn report(state: &mut Assigned) {
    let counts = state.windows.counts();
    let before = std::mem::replace(&mut state.reported, counts);
    let utility = state.windows.utility.as_str();
    for (outcome, now, then) in [
        ("counted", counts.counted, before.counted),
        ("counted_late", counts.counted_late, before.counted_late),
        ("duplicate", counts.duplicates, before.duplicates),
        ("too_late", counts.too_late, before.too_late),
        ("malformed", counts.malformed, before.malformed),
    ] {
        if now > then {
            metrics::counter!(names::READINGS, "utility" => utility, "outcome" => outcome).increment(now - then);
        }
    }
    if counts.too_late > before.too_late {
        metrics::counter!(names::LATE_READINGS, "utility" => utility).increment(counts.too_late - before.too_late);
    }
    if counts.windows_emitted > before.windows_emitted {
        metrics::counter!(names::WINDOWS_EMITTED, "utility" => utility)
            .increment(counts.windows_emitted - before.windows_emitted);
    }
}
