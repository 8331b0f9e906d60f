//! The ports: what the workloads need from the reading log and the serving
//! store, implemented once by the embedded adapters (`auth-embedded`) and once
//! by the real servers (Kafka, Redis).
//!
//! Semantics every adapter keeps:
//! - The log is a set of topics split into partitions; a record gets the next
//!   offset of its partition; a producer's `send` returns only when the
//!   records are durable; consumers of one group share the partitions and are
//!   told of every assignment change before they get records of a new partition.
//! - The serving store applies one [`PartitionFlush`] atomically: its window
//!   upserts and its checkpoint land together or not at all. Window writes are
//!   upserts of whole aggregates, so writing the same flush twice is harmless.
//! - Writes of a partition's owner are fenced: [`ServingStore::claim`] hands
//!   out an epoch above every earlier claim of that partition, and a flush
//!   carrying an older epoch is refused with [`PortError::Fenced`], so a
//!   processor that lost its partition (paused past the session timeout, say)
//!   can never write over its successor.
//! - The batch's [`Restatement`] of a window is final for the stream: once a
//!   window is restated, flushes skip it (a lagging processor, or one replaying
//!   an older checkpoint, cannot undo the batch), and only a restatement of a
//!   later version replaces it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::reading::Utility;
use crate::region::Region;

pub type Result<T, E = PortError> = std::result::Result<T, E>;

/// A failure of an adapter. [`PortError::is_retryable`] tells a caller whether
/// trying again later may succeed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{what} is unavailable: {message}")]
    Unavailable { what: String, message: String },
    #[error("{what} was refused: {message}")]
    Rejected { what: String, message: String },
    #[error("{0} is shut down")]
    Closed(String),
    /// A newer owner claimed the partition: this writer must stop writing it.
    #[error("write of {partition} refused: epoch {epoch} is fenced off by epoch {current}, a newer owner's")]
    Fenced { partition: TopicPartition, epoch: u64, current: u64 },
    /// A later batch run restated the window first: this one's are stale.
    #[error("restatement of {utility} {slot:?} as version {version} refused: version {current} restated it already")]
    Superseded { utility: Utility, slot: WindowSlot, version: u64, current: u64 },
}

impl PortError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PortError::Unavailable { .. })
    }
}

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: u32) -> Self {
        Self { topic: Arc::from(topic), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A record to append to a topic.
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// Chosen by the producer, see [`crate::partition_for`].
    pub partition: u32,
    pub key: Bytes,
    pub value: Bytes,
}

/// A record read from a partition.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub offset: u64,
    /// When the log took the record (Kafka's record timestamp, which the
    /// broker sets on topics with `message.timestamp.type=LogAppendTime`), in
    /// UTC ms; `None` when the log does not say.
    pub timestamp_ms: Option<i64>,
    pub key: Bytes,
    pub value: Bytes,
}

/// Records of one partition, in offset order.
#[derive(Debug, Clone)]
pub struct PartitionRecords {
    pub partition: TopicPartition,
    pub records: Vec<LogRecord>,
}

/// What a consumer's poll brings.
#[derive(Debug)]
pub enum Polled {
    /// These partitions now belong to this consumer; it reads them from the
    /// group's committed offset (or the start) unless it seeks elsewhere.
    Assigned(Vec<TopicPartition>),
    /// These partitions were taken away; their records stop coming.
    Revoked(Vec<TopicPartition>),
    /// These partitions were lost: the group gave them to another member
    /// without this one's consent (its session expired), so another member
    /// may be writing them already.
    Lost(Vec<TopicPartition>),
    Records(Vec<PartitionRecords>),
    /// Nothing arrived before the timeout.
    Idle,
}

/// A reading log: Kafka, or the embedded log.
#[async_trait]
pub trait ReadingLog: Send + Sync {
    /// Creates the topic, or grows it to `partitions`; never shrinks it.
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<()>;
    /// Creates a one-partition topic that keeps the newest record of each key
    /// (reference data such as the meter registry). A log that never deletes
    /// records keeps them all, which readers that apply records in order
    /// cannot tell apart.
    async fn ensure_compacted_topic(&self, topic: &str) -> Result<()> {
        self.ensure_topic(topic, 1).await
    }
    /// Number of partitions of an existing topic.
    async fn partitions(&self, topic: &str) -> Result<u32>;
    /// The next offset to be written in every partition of a topic.
    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>>;
    fn producer(&self) -> Result<Arc<dyn LogProducer>>;
    /// Joins consumer `group` for `topics`.
    fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn LogConsumer>>;
}

#[async_trait]
pub trait LogProducer: Send + Sync {
    /// Appends the records; returns once every one of them is durable.
    async fn send(&self, topic: &str, records: Vec<OutRecord>) -> Result<()>;
}

#[async_trait]
pub trait LogConsumer: Send + Sync {
    /// Waits up to `timeout` for assignment changes or records (at most `max_records`).
    /// Not cancel-safe: records taken by a poll that is dropped before it
    /// returns are lost to this consumer, so callers let every poll finish.
    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Polled>;
    /// Continues an assigned partition at `offset`.
    fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<()>;
    /// Records the group's progress (informational: the stream engine keeps
    /// its offsets in its checkpoints).
    async fn commit(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()>;
}

/// Sum, count, minimum and maximum of the readings in a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Aggregate {
    pub sum: f64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

impl Aggregate {
    pub fn of(value: f64) -> Self {
        Self { sum: value, count: 1, min: value, max: value }
    }

    pub fn add(&mut self, value: f64) {
        self.sum += value;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Aggregate) {
        self.sum += other.sum;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Whose window it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WindowOwner {
    Customer(u64),
    Region(Region),
}

/// One tumbling window: `[start_ms, start_ms + width_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowSlot {
    pub width_ms: i64,
    pub start_ms: i64,
}

/// The whole current content of one window, as computed from one partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowUpdate {
    pub owner: WindowOwner,
    pub utility: Utility,
    pub slot: WindowSlot,
    pub aggregate: Aggregate,
    /// The partition's watermark has passed the window's end.
    pub closed: bool,
}

/// Counters of one partition's processing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionCounts {
    pub counted: u64,
    pub counted_late: u64,
    pub duplicates: u64,
    pub too_late: u64,
    pub malformed: u64,
    /// Dated further ahead of the log's clock than `windows.maxClockAheadSecs`.
    #[serde(default)]
    pub quarantined: u64,
    /// Counted for their customer, but past the region lateness of a region window.
    #[serde(default)]
    pub region_too_late: u64,
    pub windows_emitted: u64,
}

impl std::ops::AddAssign for PartitionCounts {
    fn add_assign(&mut self, other: Self) {
        self.counted += other.counted;
        self.counted_late += other.counted_late;
        self.duplicates += other.duplicates;
        self.too_late += other.too_late;
        self.malformed += other.malformed;
        self.quarantined += other.quarantined;
        self.region_too_late += other.region_too_late;
        self.windows_emitted += other.windows_emitted;
    }
}

/// How far a partition's processor got at its last checkpoint, published with
/// it so that tools read it without decoding the checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamProgress {
    /// The next offset the processor reads after the checkpoint.
    pub next_offset: u64,
    /// The newest event time it has seen, UTC ms.
    pub max_event_ms: Option<i64>,
    pub counts: PartitionCounts,
}

/// A partition's checkpoint: the processor's state, and its progress.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Open-window state and offsets, as the processor encodes them.
    pub state: Bytes,
    pub progress: StreamProgress,
}

/// The newest reading time the stream has seen of one meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterLastReading {
    pub meter_id: u64,
    /// The reading's own time, UTC ms.
    pub ts_ms: i64,
}

/// What one partition's processor writes in one atomic step.
#[derive(Debug, Clone)]
pub struct PartitionFlush {
    pub partition: TopicPartition,
    /// The writer's claim on the partition ([`ServingStore::claim`]); `None`
    /// for writes that are not an owner's (the batch's restatement).
    pub epoch: Option<u64>,
    pub windows: Vec<WindowUpdate>,
    /// The newest reading time of each meter that read since the partition's
    /// last checkpoint (the stream writes them with its checkpoints). The
    /// store keeps the later of it and the time it holds, so a replay after a
    /// crash writes nothing new.
    pub meters: Vec<MeterLastReading>,
    /// When this flush is a checkpoint.
    pub checkpoint: Option<Checkpoint>,
}

/// The batch's totals of one window (of every customer and region), which
/// replace what the stream counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Restatement {
    pub utility: Utility,
    pub slot: WindowSlot,
    /// Orders the restatements of a window (the batch run's start, in ms): a
    /// store refuses one older than the last it applied with [`PortError::Superseded`].
    pub version: u64,
    pub customers: Vec<(u64, Aggregate)>,
    /// When not empty, every region's total: they replace the window of every
    /// region as the partitions wrote it (whatever the partition count then),
    /// so they come whole, in one restatement.
    pub regions: Vec<(Region, Aggregate)>,
}

/// A window as the serving store returns it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredWindow {
    pub utility: Utility,
    #[serde(flatten)]
    pub slot: WindowSlot,
    #[serde(flatten)]
    pub aggregate: Aggregate,
    pub closed: bool,
}

/// A region's window, merged over every partition that contributed to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionWindow {
    pub region: Region,
    #[serde(flatten)]
    pub window: StoredWindow,
}

/// The serving store: Redis, or the in-memory store.
#[async_trait]
pub trait ServingStore: Send + Sync {
    /// Makes the caller the owner of `partition`'s writes: returns an epoch
    /// above every earlier claim; from then on flushes with an older epoch
    /// are refused.
    async fn claim(&self, partition: &TopicPartition) -> Result<u64>;
    /// Applies the window upserts and the checkpoint of one partition
    /// atomically, or refuses them all with [`PortError::Fenced`] when the
    /// flush's epoch is older than the partition's last claim.
    /// A restated window is left as the restatement wrote it.
    async fn apply(&self, flush: PartitionFlush) -> Result<()>;
    /// Writes the batch's totals of one window, closed, atomically, and
    /// marks the window restated (for every partition of the topic).
    async fn restate(&self, restatement: Restatement) -> Result<()>;
    /// The state of the last checkpoint written for a partition.
    async fn load_checkpoint(&self, partition: &TopicPartition) -> Result<Option<Bytes>>;
    /// The progress of the last checkpoint written for a partition.
    async fn load_progress(&self, partition: &TopicPartition) -> Result<Option<StreamProgress>>;
    /// A customer's recent windows, every utility and size, oldest first.
    async fn customer_windows(&self, customer_id: u64) -> Result<Vec<StoredWindow>>;
    /// Every region's windows of one size starting at or after `since_ms`.
    async fn region_windows(&self, width_ms: i64, since_ms: i64) -> Result<Vec<RegionWindow>>;
    /// Up to `limit` customers with windows, lowest ids first.
    async fn known_customers(&self, limit: usize) -> Result<Vec<u64>>;
    /// The meters whose newest reading is older than `before_ms`, the
    /// longest silent first (then by meter id), skipping the first `skip`
    /// and returning up to `limit`.
    async fn meters_silent_since(&self, before_ms: i64, skip: usize, limit: usize) -> Result<Vec<MeterLastReading>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_add_and_merge() {
        let mut left = Aggregate::of(2.0);
        left.add(5.0);
        let mut right = Aggregate::of(1.0);
        right.merge(&left);
        assert_eq!(right, Aggregate { sum: 8.0, count: 3, min: 1.0, max: 5.0 });
    }
}
