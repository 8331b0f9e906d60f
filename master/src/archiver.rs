//! The archiver: a consumer group that writes every valid reading of the
//! utility topics to the master data.
//!
//! Each assigned partition fills one *segment*: the records from the offset of
//! its first record on, split by the UTC date of their event time. A segment
//! is written when its readings reach `archive.rollBytes` or its first record
//! has waited `archive.rollSecs`: one file per date, all named after the
//! segment's first offset, and only then is the offset after its last record
//! committed. Before the files are written, the segment's bounds are fixed in
//! a *guard* (`_archiver/<topic>/<partition>/segments/<first offset>.json`),
//! created only if absent (a conditional put): the first archiver to write a
//! segment starting at an offset decides where it ends, and every other one
//! (a restart after a crash, or a stale archiver that lost its partition and
//! does not know it yet) follows: it extends its segment to that end, or
//! reads it again up to there. So every file of a given name holds the same
//! readings whoever writes it: a rewrite replaces, never duplicates, and a
//! stale archiver cannot overwrite a segment with a shorter one. The latest
//! segment's bounds are also kept in an *intent*
//! (`_archiver/<topic>/<partition>.json`), so that an archiver resuming at a
//! segment's first offset ends it at once where the unfinished one ended.
//! Records that are not valid readings are skipped (the stream processor
//! sends them to the dead-letter topic).
//!
//! After a segment's files are written, the archiver publishes the
//! partition's *progress* (`_archiver/<topic>/<partition>/progress.json`,
//! [`ArchiveProgress`]): every record before its offset is in the master
//! data. The batch restates a day only once the progress of every partition
//! has passed the log's end as it was after the day settled. A stale archiver
//! may write an older progress over a newer one; that only makes the batch
//! wait for the next segment, never restate too early.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use auth_core::ports::{LogConsumer, LogRecord, PortError, ReadingLog, TopicPartition};
use auth_core::{ArchiveSpec, PipelineSpec, ReceiverClock, Utility, archive_group, codec, utility_topic};
use auth_runtime::CancellationToken;
use auth_runtime::partitioned::{
    Commits, FlushKind, FlushOutcome, MetricNames, PartitionedConsumer, PartitionedTask, Release, Restored, RuntimeConfig,
    Step, TaskError,
};
use chrono::NaiveDate;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::{MasterError, MasterStore, ReadingsBuilder, date_of, file_path};

/// Bytes a reading counts for toward `archive.rollBytes` (its log encoding).
const READING_BYTES: u64 = codec::ENCODED_LEN as u64;

/// Metric names.
pub mod names {
    pub const READINGS: &str = "auth_archive_readings_total";
    pub const SKIPPED: &str = "auth_archive_skipped_records_total";
    pub const FILES: &str = "auth_archive_files_total";
    pub const FILE_BYTES: &str = "auth_archive_file_bytes_total";
    pub const SEGMENT_SECONDS: &str = "auth_archive_segment_write_seconds";
    pub const PENDING: &str = "auth_archive_pending_readings";
    /// Segments whose bounds another archiver had fixed first (a restart, or a stale archiver).
    pub const SEGMENTS_FOLLOWED: &str = "auth_archive_segments_followed_total";
    pub const ASSIGNED_PARTITIONS: &str = "auth_archive_assigned_partitions";
    pub const UNRESTORED_PARTITIONS: &str = "auth_archive_unrestored_partitions";
    pub const CONSUMER_LAG: &str = "auth_archive_consumer_lag_records";
    pub const RECOVERIES: &str = "auth_archive_recoveries_total";
    pub const FENCED_PARTITIONS: &str = "auth_archive_fenced_partitions_total";
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading log: {0}")]
    Log(#[source] PortError),
    #[error("master data: {0}")]
    Master(#[from] MasterError),
    #[error("the intent of {partition} is unreadable: {source}")]
    Intent { partition: TopicPartition, source: serde_json::Error },
    #[error("{path} is unreadable: {source}")]
    Unreadable { path: String, source: serde_json::Error },
}

impl TaskError for ArchiveError {
    fn from_log(err: PortError) -> Self {
        ArchiveError::Log(err)
    }

    /// Whether the archiver may retry after this error (the server may come back).
    fn is_retryable(&self) -> bool {
        match self {
            ArchiveError::Log(err) => err.is_retryable(),
            ArchiveError::Master(MasterError::Store { .. } | MasterError::Parquet { .. }) => true,
            _ => false,
        }
    }
}

/// What the archiver published of a partition: the records before
/// `archived_before` are in the master data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveProgress {
    pub archived_before: u64,
}

/// The progress the archiver published of `partition` (nothing archived when none).
pub async fn archive_progress(store: &MasterStore, partition: &TopicPartition) -> Result<ArchiveProgress, ArchiveError> {
    match store.get(&progress_path(partition)).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|source| ArchiveError::Unreadable { path: progress_path(partition).to_string(), source }),
        None => Ok(ArchiveProgress { archived_before: 0 }),
    }
}

/// A segment's bounds, written before its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Intent {
    first_offset: u64,
    next_offset: u64,
    dates: Vec<NaiveDate>,
}

#[derive(Default)]
struct Segment {
    first_offset: Option<u64>,
    next_offset: u64,
    dates: BTreeMap<NaiveDate, ReadingsBuilder>,
    readings: u64,
    opened: Option<Instant>,
    /// Set after a restart: the segment must end where the unfinished one did.
    end_at: Option<u64>,
    /// Records past `end_at` came in the same poll; they are read again after the write.
    overflowed: bool,
}

pub struct PartitionState {
    utility: Utility,
    /// The intent found when the partition was assigned.
    found_intent: Option<Intent>,
    segment: Segment,
}

/// What an archiver did in its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveTally {
    pub readings: u64,
    pub skipped: u64,
    pub files: u64,
}

/// The archiver as a task of the partitioned-consumer runtime.
pub struct ArchiveTask {
    store: MasterStore,
    topics: HashMap<Arc<str>, Utility>,
    spec: ArchiveSpec,
    /// Readings dated further ahead of their record's log time are left out,
    /// as the stream quarantines them (`windows.maxClockAheadSecs`).
    max_clock_ahead_ms: i64,
    tally: ArchiveTally,
}

/// What an archiver takes from the pipeline spec.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    pub archive: ArchiveSpec,
    /// `windows.maxClockAheadSecs`, in ms.
    pub max_clock_ahead_ms: i64,
}

/// One archiver of a pipeline's group.
pub struct Archiver {
    runtime: PartitionedConsumer<ArchiveTask>,
}

fn intent_path(partition: &TopicPartition) -> Path {
    Path::from(format!("_archiver/{}/{}.json", partition.topic, partition.partition))
}

fn progress_path(partition: &TopicPartition) -> Path {
    Path::from(format!("_archiver/{}/{}/progress.json", partition.topic, partition.partition))
}

fn guard_path(partition: &TopicPartition, first_offset: u64) -> Path {
    Path::from(format!("_archiver/{}/{}/segments/{first_offset:020}.json", partition.topic, partition.partition))
}

/// What became of a segment that was due.
enum Written {
    /// Written; commit `next_offset` (and read again from there when records past it came).
    Committed { next_offset: u64, reread: bool },
    /// Nothing to write.
    Empty,
    /// Another archiver wrote a longer segment from this offset: this one goes on until its end.
    Extended,
    /// Another archiver wrote a shorter segment from this offset: this one is read again to its end.
    Reread { from: u64 },
}

fn runtime_config(group: String, topics: Vec<String>) -> RuntimeConfig {
    RuntimeConfig {
        group,
        topics,
        max_poll_records: 8_192,
        poll_timeout: Duration::from_millis(200),
        // Segments are looked at after every poll; each is written when it is due.
        flush_interval: Duration::ZERO,
        checkpoint_interval: Duration::ZERO,
        commits: Commits::Progress,
        metrics: MetricNames {
            assigned: names::ASSIGNED_PARTITIONS,
            unrestored: names::UNRESTORED_PARTITIONS,
            lag: names::CONSUMER_LAG,
            recoveries: names::RECOVERIES,
            fenced: names::FENCED_PARTITIONS,
        },
    }
}

impl Archiver {
    /// An archiver of a pipeline's utility topics in the group `<pipeline>.archive`.
    pub fn join(store: MasterStore, log: &dyn ReadingLog, pipeline: &str, spec: &PipelineSpec) -> Result<Self, ArchiveError> {
        let topics: Vec<(String, Utility)> =
            spec.utilities.iter().map(|&utility| (utility_topic(pipeline, utility), utility)).collect();
        let names: Vec<String> = topics.iter().map(|(topic, _)| topic.clone()).collect();
        let consumer = log.consumer(&archive_group(pipeline), &names).map_err(ArchiveError::Log)?;
        let settings = ArchiveSettings { archive: spec.archive.clone(), max_clock_ahead_ms: spec.windows.max_clock_ahead_ms() };
        Ok(Self::new(store, consumer, topics, settings, archive_group(pipeline)))
    }

    /// An archiver of the `topics` (one per utility) that `consumer` of `group` reads.
    pub fn new(
        store: MasterStore,
        consumer: Box<dyn LogConsumer>,
        topics: impl IntoIterator<Item = (String, Utility)>,
        settings: ArchiveSettings,
        group: String,
    ) -> Self {
        let topics: HashMap<Arc<str>, Utility> =
            topics.into_iter().map(|(topic, utility)| (Arc::from(topic.as_str()), utility)).collect();
        let names = topics.keys().map(|topic| topic.to_string()).collect();
        let ArchiveSettings { archive: spec, max_clock_ahead_ms } = settings;
        let task = ArchiveTask { store, topics, spec, max_clock_ahead_ms, tally: ArchiveTally::default() };
        Self { runtime: PartitionedConsumer::with_consumer(runtime_config(group, names), consumer, task) }
    }

    /// Archives until `shutdown` is cancelled, then writes every open segment and commits.
    pub async fn run(&mut self, log: &dyn ReadingLog, shutdown: &CancellationToken) -> Result<ArchiveTally, ArchiveError> {
        self.runtime.run(log, shutdown).await?;
        let tally = self.runtime.task().tally;
        tracing::info!(readings = tally.readings, files = tally.files, "archiver stopped");
        Ok(tally)
    }

    /// One poll, then the segments that are due; says whether records came.
    pub async fn step(&mut self) -> Result<bool, ArchiveError> {
        Ok(matches!(self.runtime.step().await?, Step::Records(_)))
    }

    /// Writes every open segment and commits it.
    pub async fn finish(&mut self) -> Result<(), ArchiveError> {
        self.runtime.finish().await
    }
}

impl ArchiveTask {
    fn is_due(&self, segment: &Segment) -> bool {
        let Some(first_offset) = segment.first_offset else { return false };
        match segment.end_at {
            Some(end) => segment.next_offset >= end || first_offset >= end,
            None => {
                segment.readings * READING_BYTES >= self.spec.roll_bytes
                    || segment.opened.is_some_and(|opened| opened.elapsed().as_secs() >= u64::from(self.spec.roll_secs))
            }
        }
    }

    /// Fixes the segment's bounds (or follows the bounds another archiver
    /// fixed), writes the intent and one file per date.
    #[tracing::instrument(level = "debug", skip(self, state))]
    async fn write_segment(&mut self, partition: &TopicPartition, state: &mut PartitionState) -> Result<Written, ArchiveError> {
        let Some(first_offset) = state.segment.first_offset else { return Ok(Written::Empty) };
        let started = Instant::now();
        let utility = state.utility;
        let next_offset = state.segment.next_offset;
        let dates: Vec<NaiveDate> = state.segment.dates.keys().copied().collect();
        if !dates.is_empty() {
            let intent = Intent { first_offset, next_offset, dates: dates.clone() };
            let unreadable = |source| ArchiveError::Intent { partition: partition.clone(), source };
            let encoded = bytes::Bytes::from(serde_json::to_vec(&intent).map_err(unreadable)?);
            if let Some(existing) = self.store.put_if_absent(&guard_path(partition, first_offset), encoded.clone()).await? {
                let fixed: Intent = serde_json::from_slice(&existing).map_err(unreadable)?;
                if fixed.next_offset != next_offset {
                    metrics::counter!(names::SEGMENTS_FOLLOWED).increment(1);
                    tracing::warn!(
                        %partition, first_offset, ours = next_offset, fixed = fixed.next_offset,
                        "another archiver wrote this segment first, ending elsewhere: following its bounds"
                    );
                    if fixed.next_offset > next_offset {
                        state.segment.end_at = Some(fixed.next_offset);
                        return Ok(Written::Extended);
                    }
                    state.segment = Segment::default();
                    state.found_intent = Some(fixed);
                    return Ok(Written::Reread { from: first_offset });
                }
            }
            self.store.put(&intent_path(partition), encoded).await?;
        }
        let mut bytes = 0;
        for (&date, builder) in &mut state.segment.dates {
            let relative = file_path(utility, date, partition.partition, first_offset);
            let batch = builder.finish().map_err(MasterError::from)?;
            let mut file = self.store.create(&relative)?;
            file.write(&batch).await?;
            let written = file.close().await?;
            bytes += written.bytes;
            tracing::debug!(path = %written.path, rows = written.rows, "file written");
        }
        let readings = state.segment.readings;
        tracing::info!(
            %partition, first_offset, next_offset, readings, files = dates.len(), bytes,
            ms = started.elapsed().as_millis() as u64, "segment archived"
        );
        metrics::counter!(names::FILES).increment(dates.len() as u64);
        metrics::counter!(names::FILE_BYTES).increment(bytes);
        metrics::histogram!(names::SEGMENT_SECONDS).record(started.elapsed().as_secs_f64());
        self.tally.files += dates.len() as u64;
        let progress = ArchiveProgress { archived_before: next_offset };
        let encoded = serde_json::to_vec(&progress)
            .map_err(|source| ArchiveError::Unreadable { path: progress_path(partition).to_string(), source })?;
        self.store.put(&progress_path(partition), encoded.into()).await?;
        let reread = state.segment.overflowed;
        state.segment = Segment::default();
        Ok(Written::Committed { next_offset, reread })
    }
}

#[async_trait]
impl PartitionedTask for ArchiveTask {
    type State = PartitionState;
    type Error = ArchiveError;

    /// Reads the partition's intent; the partition continues at the group's committed offset.
    async fn restore(&mut self, partition: &TopicPartition) -> Result<Option<Restored<PartitionState>>, ArchiveError> {
        let Some(&utility) = self.topics.get(&partition.topic) else { return Ok(None) };
        let found_intent = match self.store.get(&intent_path(partition)).await? {
            Some(bytes) => Some(
                serde_json::from_slice::<Intent>(&bytes)
                    .map_err(|source| ArchiveError::Intent { partition: partition.clone(), source })?,
            ),
            None => None,
        };
        tracing::info!(%partition, intent = ?found_intent, "partition assigned");
        Ok(Some(Restored { state: PartitionState { utility, found_intent, segment: Segment::default() }, start_at: None }))
    }

    fn process(&mut self, partition: &TopicPartition, state: &mut PartitionState, records: Vec<LogRecord>, _now: Instant) {
        let received_ms = auth_core::now_ms();
        for record in records {
            // The same clock as the stream's, so that both leave out the same readings.
            let log_ms = record.timestamp_ms.map_or(received_ms, |appended| appended.min(received_ms));
            let receiver = ReceiverClock::new(log_ms, self.max_clock_ahead_ms);
            add_record(state, partition, record.offset, &record.value, receiver, &mut self.tally);
        }
    }

    async fn flush(
        &mut self,
        states: &mut BTreeMap<TopicPartition, PartitionState>,
        kind: FlushKind,
    ) -> Result<FlushOutcome, ArchiveError> {
        let mut outcome = FlushOutcome::default();
        for (partition, state) in states.iter_mut() {
            let due = if kind.last {
                state.segment.first_offset.is_some() && state.segment.end_at.is_none()
            } else {
                self.is_due(&state.segment)
            };
            if !due {
                continue;
            }
            match self.write_segment(partition, state).await? {
                Written::Committed { next_offset, reread } => {
                    outcome.commit.push((partition.clone(), next_offset));
                    if reread {
                        outcome.seek.push((partition.clone(), next_offset));
                    }
                }
                Written::Reread { from } => outcome.seek.push((partition.clone(), from)),
                Written::Empty | Written::Extended => {}
            }
        }
        let pending: u64 = states.values().map(|state| state.segment.readings).sum();
        metrics::gauge!(names::PENDING).set(pending as f64);
        Ok(outcome)
    }

    fn next_offset(state: &PartitionState) -> Option<u64> {
        state.segment.first_offset.map(|_| state.segment.next_offset)
    }

    fn release(&mut self, partition: &TopicPartition, state: PartitionState, why: Release) {
        tracing::info!(%partition, ?why, unwritten = state.segment.readings, "partition released");
    }
}

fn add_record(
    state: &mut PartitionState,
    partition: &TopicPartition,
    offset: u64,
    value: &[u8],
    receiver: ReceiverClock,
    tally: &mut ArchiveTally,
) {
    let segment = &mut state.segment;
    if segment.first_offset.is_none() {
        segment.opened = Some(Instant::now());
        segment.first_offset = Some(offset);
        segment.end_at = state
            .found_intent
            .take()
            .filter(|intent| intent.first_offset == offset)
            .map(|intent| {
                tracing::info!(%partition, first_offset = offset, next_offset = intent.next_offset, "rewriting an unfinished segment");
                intent.next_offset
            });
    } else if segment.end_at.is_some_and(|end| offset >= end) {
        // The segment ends before this record; the consumer reads it again
        // once the segment is written.
        segment.overflowed = true;
        return;
    }
    segment.next_offset = offset + 1;
    match codec::decode(value) {
        Ok(reading) if reading.utility == state.utility && reading.problems(Some(receiver)).is_empty() => {
            segment.dates.entry(date_of(reading.ts_ms)).or_default().push(&reading, offset);
            segment.readings += 1;
            tally.readings += 1;
            metrics::counter!(names::READINGS).increment(1);
        }
        _ => {
            tally.skipped += 1;
            metrics::counter!(names::SKIPPED).increment(1);
        }
    }
}
