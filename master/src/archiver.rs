//! The archiver: a consumer group that writes every valid reading of the
//! utility topics to the master data.
//!
//! Each assigned partition fills one *segment*: the records from the offset of
//! its first record on, split by the UTC date of their event time. A segment
//! is written when its readings reach `archive.rollBytes` or its first record
//! has waited `archive.rollSecs`: one file per date, all named after the
//! segment's first offset, and only then is the offset after its last record
//! committed. Before the files are written, the segment's bounds are recorded
//! in an *intent* (`_archiver/<topic>/<partition>.json`). After a crash the
//! group resumes at the segment's first offset; the archiver finds the intent
//! with that start and ends the new segment exactly where the old one ended,
//! so every file is written again with the same name and the same readings:
//! it replaces, never duplicates. Records that are not valid readings are
//! skipped (the stream processor sends them to the dead-letter topic).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_core::ports::{LogConsumer, Polled, PortError, TopicPartition};
use auth_core::{ArchiveSpec, Utility, codec};
use chrono::NaiveDate;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

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
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading log: {0}")]
    Log(#[source] PortError),
    #[error("master data: {0}")]
    Master(#[from] MasterError),
    #[error("the intent of {partition} is unreadable: {source}")]
    Intent { partition: TopicPartition, source: serde_json::Error },
}

impl ArchiveError {
    /// Whether the archiver may retry after this error (the server may come back).
    pub fn is_retryable(&self) -> bool {
        match self {
            ArchiveError::Log(err) => err.is_retryable(),
            ArchiveError::Master(MasterError::Store { .. } | MasterError::Parquet { .. }) => true,
            _ => false,
        }
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

struct PartitionState {
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

pub struct Archiver {
    store: MasterStore,
    consumer: Box<dyn LogConsumer>,
    topics: HashMap<Arc<str>, Utility>,
    spec: ArchiveSpec,
    partitions: HashMap<TopicPartition, PartitionState>,
    tally: ArchiveTally,
}

fn intent_path(partition: &TopicPartition) -> Path {
    Path::from(format!("_archiver/{}/{}.json", partition.topic, partition.partition))
}

impl Archiver {
    /// An archiver of the `topics` (one per utility) that `consumer` reads.
    pub fn new(
        store: MasterStore,
        consumer: Box<dyn LogConsumer>,
        topics: impl IntoIterator<Item = (String, Utility)>,
        spec: ArchiveSpec,
    ) -> Self {
        let topics = topics.into_iter().map(|(topic, utility)| (Arc::from(topic.as_str()), utility)).collect();
        Self { store, consumer, topics, spec, partitions: HashMap::new(), tally: ArchiveTally::default() }
    }

    /// Archives until `stop` turns true, then writes every open segment and commits.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<ArchiveTally, ArchiveError> {
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            match self.step().await {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(err) if err.is_retryable() => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "archiving failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(err) => return Err(err),
            }
        }
        self.finish().await?;
        tracing::info!(readings = self.tally.readings, files = self.tally.files, "archiver stopped");
        Ok(self.tally)
    }

    /// One poll, then the segments that are due; says whether records came.
    pub async fn step(&mut self) -> Result<bool, ArchiveError> {
        let mut records = false;
        match self.consumer.poll(8_192, Duration::from_millis(200)).await.map_err(ArchiveError::Log)? {
            Polled::Assigned(partitions) => {
                for partition in partitions {
                    self.assign(partition).await?;
                }
            }
            Polled::Revoked(partitions) => {
                for partition in partitions {
                    if let Some(state) = self.partitions.remove(&partition) {
                        tracing::info!(%partition, unwritten = state.segment.readings, "partition revoked");
                    }
                }
            }
            Polled::Records(batches) => {
                records = true;
                for batch in batches {
                    let Some(state) = self.partitions.get_mut(&batch.partition) else { continue };
                    for record in batch.records {
                        add_record(state, &batch.partition, record.offset, &record.value, &mut self.tally);
                    }
                }
            }
            Polled::Idle => {}
        }
        let due: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, state)| self.is_due(&state.segment))
            .map(|(partition, _)| partition.clone())
            .collect();
        for partition in due {
            self.write_segment(&partition).await?;
        }
        let pending: u64 = self.partitions.values().map(|state| state.segment.readings).sum();
        metrics::gauge!(names::PENDING).set(pending as f64);
        Ok(records)
    }

    async fn assign(&mut self, partition: TopicPartition) -> Result<(), ArchiveError> {
        let Some(&utility) = self.topics.get(&partition.topic) else { return Ok(()) };
        let found_intent = match self.store.get(&intent_path(&partition)).await? {
            Some(bytes) => Some(
                serde_json::from_slice::<Intent>(&bytes)
                    .map_err(|source| ArchiveError::Intent { partition: partition.clone(), source })?,
            ),
            None => None,
        };
        tracing::info!(%partition, intent = ?found_intent, "partition assigned");
        self.partitions.insert(partition, PartitionState { utility, found_intent, segment: Segment::default() });
        Ok(())
    }

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

    /// Writes every open segment and commits it.
    pub async fn finish(&mut self) -> Result<(), ArchiveError> {
        let open: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, state)| state.segment.first_offset.is_some() && state.segment.end_at.is_none())
            .map(|(partition, _)| partition.clone())
            .collect();
        for partition in open {
            self.write_segment(&partition).await?;
        }
        Ok(())
    }

    /// Writes the intent, one file per date, and commits the offset after the segment.
    #[tracing::instrument(level = "debug", skip(self))]
    async fn write_segment(&mut self, partition: &TopicPartition) -> Result<(), ArchiveError> {
        let Some(state) = self.partitions.get_mut(partition) else { return Ok(()) };
        let Some(first_offset) = state.segment.first_offset else { return Ok(()) };
        let started = Instant::now();
        let utility = state.utility;
        let next_offset = state.segment.next_offset;
        let dates: Vec<NaiveDate> = state.segment.dates.keys().copied().collect();
        if !dates.is_empty() {
            let intent = Intent { first_offset, next_offset, dates: dates.clone() };
            let encoded = serde_json::to_vec(&intent).map_err(|source| ArchiveError::Intent { partition: partition.clone(), source })?;
            self.store.put(&intent_path(partition), encoded.into()).await?;
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
        self.consumer.commit(&[(partition.clone(), next_offset)]).await.map_err(ArchiveError::Log)?;
        if state.segment.overflowed {
            self.consumer.seek(partition, next_offset).map_err(ArchiveError::Log)?;
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
        state.segment = Segment::default();
        Ok(())
    }
}

fn add_record(state: &mut PartitionState, partition: &TopicPartition, offset: u64, value: &[u8], tally: &mut ArchiveTally) {
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
        Ok(reading) if reading.utility == state.utility && reading.problems(None).is_empty() => {
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
