//! The stream processor: a task of the partitioned-consumer runtime
//! (`auth-runtime`) over the utility topics. It keeps window state per
//! restored partition, flushes changed windows to the serving store and
//! checkpoints state with offsets, every write fenced by the epoch it claimed
//! when it restored the partition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use auth_core::ports::{
    Checkpoint, LogProducer, LogRecord, OutRecord, PartitionFlush, PortError, ReadingLog, ServingStore, StreamProgress,
    TopicPartition,
};
use auth_core::spec::PipelineSpec;
use auth_core::{DeadLetter, InvalidReason, ReceiverClock, Utility, codec, dead_letter_topic, stream_group, utility_topic};
use auth_runtime::partitioned::{
    Commits, FlushKind, FlushOutcome, MetricNames, PartitionedConsumer, PartitionedTask, Release, Restored, RuntimeConfig,
    TaskError,
};
use auth_runtime::CancellationToken;
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

impl TaskError for StreamError {
    fn from_log(err: PortError) -> Self {
        StreamError::Log(err)
    }

    /// Whether the processor may succeed by trying again (a server was unavailable).
    fn is_retryable(&self) -> bool {
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
    /// A reading dated further ahead of its record's log time is quarantined.
    pub max_clock_ahead_ms: i64,
    pub flush_interval: Duration,
    pub checkpoint_interval: Duration,
    pub max_poll_records: usize,
}

impl ProcessorConfig {
    pub fn from_spec(pipeline: &str, spec: &PipelineSpec) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            group: stream_group(pipeline),
            utilities: spec.utilities.clone(),
            windows: WindowConfig::from_spec(&spec.windows),
            max_clock_ahead_ms: spec.windows.max_clock_ahead_ms(),
            flush_interval: Duration::from_millis(spec.stream.flush_interval_ms),
            checkpoint_interval: Duration::from_millis(spec.stream.checkpoint_interval_ms),
            max_poll_records: spec.stream.max_poll_records as usize,
        }
    }

    pub fn topics(&self) -> Vec<String> {
        self.utilities.iter().map(|&utility| utility_topic(&self.pipeline, utility)).collect()
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.windows.idle_timeout_ms.unsigned_abs())
    }

    fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            group: self.group.clone(),
            topics: self.topics(),
            max_poll_records: self.max_poll_records,
            poll_timeout: self.flush_interval.min(Duration::from_millis(200)),
            flush_interval: self.flush_interval,
            checkpoint_interval: self.checkpoint_interval,
            commits: Commits::Informational,
            metrics: MetricNames {
                assigned: names::ASSIGNED_PARTITIONS,
                unrestored: names::UNRESTORED_PARTITIONS,
                lag: names::CONSUMER_LAG,
                recoveries: names::RECOVERIES,
                fenced: names::FENCED_PARTITIONS,
            },
        }
    }
}

/// A restored partition's state.
pub struct Assigned {
    windows: PartitionWindows,
    next_offset: u64,
    /// The claim under which this processor writes the partition.
    epoch: u64,
    dead_letters: Vec<OutRecord>,
    changed_since_checkpoint: bool,
    /// Size of the last checkpoint, to size the next one's buffer.
    checkpoint_size: checkpoint::EncodedSize,
    reported: PartitionCounts,
}

/// The window engine as a task of the partitioned-consumer runtime.
pub struct StreamTask {
    config: ProcessorConfig,
    store: Arc<dyn ServingStore>,
    dead_letters: Arc<dyn LogProducer>,
    dead_letter_topic: String,
    topic_utility: HashMap<Arc<str>, Utility>,
    watermarks: WatermarkTracker,
    last_checkpoint: Instant,
    /// When the quiet partitions' windows were last closed on the wall clock.
    last_quiet_check: Instant,
}

/// One stream processor: the window engine on the partitioned-consumer runtime.
pub struct Processor {
    runtime: PartitionedConsumer<StreamTask>,
}

pub use auth_runtime::partitioned::Step;

impl Processor {
    /// Joins the processor group on the pipeline's utility topics.
    pub fn new(config: ProcessorConfig, log: &dyn ReadingLog, store: Arc<dyn ServingStore>) -> Result<Self> {
        let dead_letters = log.producer().map_err(StreamError::Log)?;
        let topic_utility = config
            .utilities
            .iter()
            .map(|&utility| (Arc::from(utility_topic(&config.pipeline, utility)), utility))
            .collect();
        let runtime_config = config.runtime();
        let task = StreamTask {
            dead_letter_topic: dead_letter_topic(&config.pipeline),
            watermarks: WatermarkTracker::new(config.idle_timeout()),
            config,
            store,
            dead_letters,
            topic_utility,
            last_checkpoint: Instant::now(),
            last_quiet_check: Instant::now(),
        };
        Ok(Self { runtime: PartitionedConsumer::new(runtime_config, log, task)? })
    }

    /// Counts over every restored partition (restored from checkpoints included).
    pub fn counts(&self) -> PartitionCounts {
        let mut total = PartitionCounts::default();
        for state in self.runtime.states().values() {
            total += state.windows.counts();
        }
        total
    }

    /// Next offset to process of each restored partition.
    pub fn positions(&self) -> Vec<(TopicPartition, u64)> {
        self.runtime.positions()
    }

    /// Assigned partitions whose checkpoint could not be loaded yet.
    pub fn unrestored(&self) -> usize {
        self.runtime.unrestored().len()
    }

    /// Polls once and processes what came; flushes when the flush interval passed.
    pub async fn step(&mut self) -> Result<Step> {
        self.runtime.step().await
    }

    /// Writes every changed window; with `checkpoint`, each partition's state and offset too.
    pub async fn flush(&mut self, checkpoint: bool) -> Result<()> {
        self.runtime.flush(checkpoint).await
    }

    /// Whether the group gave this processor its partitions and every one of
    /// them (if any) is restored and processed up to the log's end.
    pub async fn caught_up(&self, log: &dyn ReadingLog) -> Result<bool> {
        self.runtime.caught_up(log).await
    }

    /// Records in the log after the positions of the restored partitions.
    pub async fn lag(&self, log: &dyn ReadingLog) -> Result<u64> {
        self.runtime.lag(log).await
    }

    /// Processes until every assigned partition is at the log's end, then
    /// flushes and checkpoints.
    pub async fn drain(&mut self, log: &dyn ReadingLog) -> Result<()> {
        self.runtime.drain(log).await
    }

    /// Runs until `shutdown` is cancelled, then flushes and checkpoints.
    pub async fn run(mut self, log: Arc<dyn ReadingLog>, shutdown: CancellationToken) -> Result<()> {
        self.runtime.run(log.as_ref(), &shutdown).await
    }
}

#[async_trait]
impl PartitionedTask for StreamTask {
    type State = Assigned;
    type Error = StreamError;

    /// Claims the partition (a new epoch), then loads its checkpoint: a
    /// checkpoint written by an earlier owner after the claim is refused, so
    /// the one loaded is the newest there will be.
    #[tracing::instrument(level = "debug", skip(self))]
    async fn restore(&mut self, partition: &TopicPartition) -> Result<Option<Restored<Assigned>>> {
        let Some(&utility) = self.topic_utility.get(&partition.topic) else { return Ok(None) };
        let epoch = self.store.claim(partition).await.map_err(StreamError::Store)?;
        let saved = self.store.load_checkpoint(partition).await.map_err(StreamError::Store)?;
        let (windows, next_offset) = match saved {
            Some(bytes) => checkpoint::decode(&bytes, utility, self.config.windows.clone())
                .map_err(|source| StreamError::Checkpoint { partition: partition.clone(), source })?,
            None => (PartitionWindows::new(utility, self.config.windows.clone()), 0),
        };
        tracing::info!(%partition, next_offset, epoch, open_windows = windows.open_windows(), "partition restored");
        let reported = windows.counts();
        let state = Assigned {
            windows,
            next_offset,
            epoch,
            dead_letters: Vec::new(),
            changed_since_checkpoint: false,
            checkpoint_size: checkpoint::EncodedSize::default(),
            reported,
        };
        Ok(Some(Restored { state, start_at: Some(next_offset) }))
    }

    fn process(&mut self, partition: &TopicPartition, state: &mut Assigned, records: Vec<LogRecord>, now: Instant) {
        let utility = state.windows.utility;
        let received_ms = auth_core::now_ms();
        for record in records {
            if record.offset < state.next_offset {
                continue;
            }
            state.next_offset = record.offset + 1;
            state.changed_since_checkpoint = true;
            // The log's clock as of this record: the broker's append time,
            // the same on every replay, and never later than this clock.
            let log_ms = record.timestamp_ms.map_or(received_ms, |appended| appended.min(received_ms));
            let receiver = ReceiverClock::new(log_ms, self.config.max_clock_ahead_ms);
            let reasons = match codec::decode(&record.value) {
                Ok(reading) if reading.utility != utility => {
                    state.windows.count_malformed();
                    vec![format!("a {} reading on the {} topic", reading.utility, utility)]
                }
                Ok(reading) => {
                    let problems = reading.problems(Some(receiver));
                    if problems.is_empty() {
                        state.windows.add(&reading, log_ms);
                        continue;
                    }
                    if problems.iter().all(|problem| matches!(problem, InvalidReason::FutureTimestamp { .. })) {
                        state.windows.count_quarantined();
                    } else {
                        state.windows.count_malformed();
                    }
                    problems.iter().map(ToString::to_string).collect()
                }
                Err(err) => {
                    state.windows.count_malformed();
                    vec![err.to_string()]
                }
            };
            let letter = DeadLetter::of_record(&partition.topic, partition.partition, record.offset, reasons, &record.value, received_ms);
            state.dead_letters.push(OutRecord { partition: 0, key: record.key, value: Bytes::from(letter.to_json()) });
        }
        self.watermarks.observe(partition, state.windows.watermark_ms(), now);
    }

    /// Writes every changed window to the serving store, per partition in one
    /// atomic step; with a checkpoint, the same step stores the partition's
    /// state and next offset (after its dead letters are durable).
    #[tracing::instrument(level = "debug", skip(self, states))]
    async fn flush(&mut self, states: &mut BTreeMap<TopicPartition, Assigned>, kind: FlushKind) -> Result<FlushOutcome> {
        let started = Instant::now();
        let pipeline_watermark = self.watermarks.operator_watermark(started);
        if started.duration_since(self.last_quiet_check) >= self.config.idle_timeout() / 2 {
            self.last_quiet_check = started;
            let now_ms = auth_core::now_ms();
            for state in states.values_mut() {
                state.windows.close_quiet(now_ms);
            }
        }
        let mut writes = tokio::task::JoinSet::new();
        for (partition, state) in states.iter_mut() {
            let windows = state.windows.take_updates();
            let write_checkpoint = kind.checkpoint && state.changed_since_checkpoint;
            if write_checkpoint && !state.dead_letters.is_empty() {
                let letters = std::mem::take(&mut state.dead_letters);
                let count = letters.len() as u64;
                self.dead_letters.send(&self.dead_letter_topic, letters).await.map_err(|source| {
                    StreamError::DeadLetter { topic: self.dead_letter_topic.clone(), source }
                })?;
                metrics::counter!(names::DEAD_LETTERS).increment(count);
            }
            let blob = if write_checkpoint {
                let (encoded, size) = checkpoint::encode(&state.windows, state.next_offset, state.checkpoint_size)
                    .map_err(|source| StreamError::Checkpoint { partition: partition.clone(), source })?;
                state.checkpoint_size = size;
                let progress = StreamProgress {
                    next_offset: state.next_offset,
                    max_event_ms: state.windows.clock_ms,
                    counts: state.windows.counts(),
                };
                Some(Checkpoint { state: Bytes::from(encoded), progress })
            } else {
                None
            };
            // With the checkpoint only: a meter read again since the last one is written once.
            let meters = if write_checkpoint { state.windows.take_meter_readings() } else { Vec::new() };
            if windows.is_empty() && meters.is_empty() && blob.is_none() {
                continue;
            }
            let store = Arc::clone(&self.store);
            let flush = PartitionFlush { partition: partition.clone(), epoch: Some(state.epoch), windows, meters, checkpoint: blob };
            let written = (partition.clone(), write_checkpoint);
            writes.spawn(async move { (written, store.apply(flush).await) });
        }
        // The partitions' writes go out together, so that the store works on
        // one while the next is being encoded; the flush is done when all are.
        let mut outcome = FlushOutcome::default();
        let mut failure = None;
        while let Some(joined) = writes.join_next().await {
            let ((partition, wrote_checkpoint), result) = joined
                .map_err(|err| StreamError::Store(PortError::Closed(format!("serving-store write task: {err}"))))?;
            match result {
                Ok(()) => {
                    if let Some(state) = states.get_mut(&partition) {
                        if wrote_checkpoint {
                            state.changed_since_checkpoint = false;
                        }
                        report(state);
                    }
                }
                Err(PortError::Fenced { .. }) => outcome.fenced.push(partition),
                Err(err) => failure = Some(StreamError::Store(err)),
            }
        }
        if let Some(err) = failure {
            return Err(err);
        }
        if kind.checkpoint {
            // Tells the group how far the checkpoints got, for tools that watch its lag.
            outcome.commit = states
                .iter()
                .filter(|(_, state)| !state.changed_since_checkpoint && state.next_offset > 0)
                .map(|(partition, state)| (partition.clone(), state.next_offset))
                .collect();
            self.last_checkpoint = Instant::now();
        }
        metrics::gauge!(names::CHECKPOINT_AGE).set(self.last_checkpoint.elapsed().as_secs_f64());
        if let Some(watermark) = pipeline_watermark {
            metrics::gauge!(names::WATERMARK).set(watermark as f64);
        }
        metrics::histogram!(names::FLUSH_DURATION).record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    fn next_offset(state: &Assigned) -> Option<u64> {
        Some(state.next_offset)
    }

    fn release(&mut self, partition: &TopicPartition, _state: Assigned, why: Release) {
        if why == Release::Revoked {
            tracing::info!(%partition, "partition revoked; its new owner resumes from the last checkpoint");
        }
        self.watermarks.forget(partition);
    }

    fn log_progress(&self, states: &BTreeMap<TopicPartition, Assigned>, lag: u64) {
        let mut counts = PartitionCounts::default();
        for state in states.values() {
            counts += state.windows.counts();
        }
        tracing::info!(
            partitions = states.len(),
            lag,
            counted = counts.counted + counts.counted_late,
            too_late = counts.too_late,
            "progress"
        );
    }
}

fn report(state: &mut Assigned) {
    let counts = state.windows.counts();
    let before = std::mem::replace(&mut state.reported, counts);
    let utility = state.windows.utility.as_str();
    // Every series is written, zero or not, so that each exists (at 0) from
    // the first flush on and rate() over it answers.
    for (outcome, now, then) in [
        ("counted", counts.counted, before.counted),
        ("counted_late", counts.counted_late, before.counted_late),
        ("duplicate", counts.duplicates, before.duplicates),
        ("too_late", counts.too_late, before.too_late),
        ("malformed", counts.malformed, before.malformed),
        ("quarantined", counts.quarantined, before.quarantined),
    ] {
        metrics::counter!(names::READINGS, "utility" => utility, "outcome" => outcome).increment(now - then);
    }
    metrics::counter!(names::LATE_READINGS, "utility" => utility).increment(counts.too_late - before.too_late);
    metrics::counter!(names::REGION_LATE_READINGS, "utility" => utility)
        .increment(counts.region_too_late - before.region_too_late);
    metrics::counter!(names::WINDOWS_EMITTED, "utility" => utility).increment(counts.windows_emitted - before.windows_emitted);
}
