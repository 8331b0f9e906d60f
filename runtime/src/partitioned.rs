//! The partitioned-consumer runtime: one loop for every role that consumes
//! the reading log as a member of a consumer group (the stream processor,
//! the archiver).
//!
//! A role is a [`PartitionedTask`]: it restores a partition's state when the
//! partition is assigned, processes its records, and flushes (writes what it
//! computed, checkpoints) when the runtime says so. The runtime owns the rest:
//!
//! - Assignment: every assigned partition is restored before any of its
//!   records is processed. A restore that fails with a retryable error (the
//!   store is unavailable) leaves the partition *unrestored*: it is retried
//!   with jittered exponential backoff while the other partitions go on, its
//!   records are dropped until it is restored and then read again from its
//!   checkpoint, and `unrestored` is exported, so no partition is ever
//!   silently orphaned. A restore that fails for good ends the run.
//! - Revocation and loss: the partition's state is released at once; a
//!   partition the group lost (the session expired) is never written again.
//! - Fencing: the task claims an epoch when it restores a partition and its
//!   writes carry it; a write the store refuses because a newer owner claimed
//!   the partition comes back as fenced, and the runtime drops that partition
//!   (logged, counted) instead of fighting over it.
//! - Cadence: a flush every `flush_interval`, a checkpoint every
//!   `checkpoint_interval`, a last one at shutdown; the offsets the task
//!   reports are committed to the group.
//! - Faults: a retryable error pauses the run (jittered backoff, the pause
//!   ends early at shutdown), then every partition is restored again from its
//!   last checkpoint: the task cannot tell what reached the store, so it
//!   replays, which gives exactly the results of a run without the fault.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use auth_core::ports::{LogConsumer, LogRecord, Polled, PortError, ReadingLog, TopicPartition};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// How often a running consumer measures its lag.
const LAG_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Names of the runtime's metrics for one role (`auth_<role>_...`).
#[derive(Debug, Clone, Copy)]
pub struct MetricNames {
    /// Gauge: partitions restored and processed by this member.
    pub assigned: &'static str,
    /// Gauge: partitions assigned whose restore has not succeeded yet.
    pub unrestored: &'static str,
    /// Gauge: records in the log after the positions of the restored partitions.
    pub lag: &'static str,
    /// Counter: pauses after a server was unavailable.
    pub recoveries: &'static str,
    /// Counter: partitions dropped because a newer owner fenced this member off.
    pub fenced: &'static str,
}

/// What the group's committed offsets mean to a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commits {
    /// Progress lives in the task's checkpoints; commits only let Kafka's
    /// tools show the lag, so a failed commit is logged and forgotten.
    Informational,
    /// The committed offset is where the group resumes: a failed commit is a
    /// failure of the flush.
    Progress,
}

/// Settings of one consumer.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub group: String,
    pub topics: Vec<String>,
    pub max_poll_records: usize,
    /// The longest a poll waits for records.
    pub poll_timeout: Duration,
    pub flush_interval: Duration,
    pub checkpoint_interval: Duration,
    pub commits: Commits,
    pub metrics: MetricNames,
}

/// A restored partition: the task's state and where its records continue
/// (`None`: at the group's committed offset, or the log's start).
#[derive(Debug)]
pub struct Restored<S> {
    pub state: S,
    pub start_at: Option<u64>,
}

/// Why the runtime hands a partition's state back to the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The group moved the partition to another member.
    Revoked,
    /// The group gave the partition away without this member (its session
    /// expired): another member may be writing it already.
    Lost,
    /// The store refused a write: a newer owner claimed the partition.
    Fenced,
    /// A server was unavailable: the partition is restored again from its checkpoint.
    Restart,
}

/// Which flush the runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushKind {
    /// Store the partitions' state with their offsets too.
    pub checkpoint: bool,
    /// The consumer is stopping: write everything that is pending.
    pub last: bool,
}

/// What a flush asks of the runtime.
#[derive(Debug, Default)]
pub struct FlushOutcome {
    /// Offsets to commit to the group (the next offset to read).
    pub commit: Vec<(TopicPartition, u64)>,
    /// Partitions to read again from an offset.
    pub seek: Vec<(TopicPartition, u64)>,
    /// Partitions whose writes the store refused: a newer owner has them.
    pub fenced: Vec<TopicPartition>,
}

/// An error of a task, as the runtime needs to classify it.
pub trait TaskError: std::error::Error + Send + Sync + 'static {
    /// Wraps an error of the reading log.
    fn from_log(err: PortError) -> Self;
    /// Whether trying again later may succeed (a server was unavailable).
    fn is_retryable(&self) -> bool;
}

/// A role that consumes partitions: the runtime calls it, the task never polls.
#[async_trait]
pub trait PartitionedTask: Send {
    /// What the task keeps per restored partition.
    type State: Send;
    type Error: TaskError;

    /// Restores a newly assigned partition (claiming it in the store the task
    /// writes); `None` when the partition is not one the task handles.
    async fn restore(&mut self, partition: &TopicPartition) -> Result<Option<Restored<Self::State>>, Self::Error>;

    /// Processes records of a restored partition, in offset order.
    fn process(&mut self, partition: &TopicPartition, state: &mut Self::State, records: Vec<LogRecord>, now: Instant);

    /// Writes what is due: every partition's changes, their state with a checkpoint.
    async fn flush(
        &mut self,
        states: &mut BTreeMap<TopicPartition, Self::State>,
        kind: FlushKind,
    ) -> Result<FlushOutcome, Self::Error>;

    /// The next offset the task will process of a partition, when it knows it.
    fn next_offset(state: &Self::State) -> Option<u64>;

    /// The runtime no longer owns the partition (or restores it again).
    fn release(&mut self, partition: &TopicPartition, state: Self::State, why: Release);

    /// Logs a progress line; called every few seconds by [`PartitionedConsumer::run`].
    fn log_progress(&self, states: &BTreeMap<TopicPartition, Self::State>, lag: u64) {
        tracing::info!(partitions = states.len(), lag, "progress");
    }
}

/// What one [`PartitionedConsumer::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Records(usize),
    Rebalanced,
    Idle,
}

/// The pauses between attempts: from 100 ms, doubling, at most 10 s, jittered.
fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The next pause of `delays`; the iterator is endless, the fallback is its ceiling.
fn next_pause(delays: &mut ExponentialBackoff) -> Duration {
    delays.next().unwrap_or(Duration::from_secs(10))
}

/// One member of a consumer group running a [`PartitionedTask`].
pub struct PartitionedConsumer<T: PartitionedTask> {
    config: RuntimeConfig,
    consumer: Box<dyn LogConsumer>,
    task: T,
    owned: BTreeMap<TopicPartition, T::State>,
    /// Assigned partitions waiting to be restored.
    unrestored: BTreeSet<TopicPartition>,
    restore_delays: ExponentialBackoff,
    restore_not_before: Option<Instant>,
    /// The group has given this member its first assignment (possibly empty).
    joined: bool,
    /// The last offset handed to the group per partition: a commit is made
    /// only for partitions that moved, so that commits do not pile up inside
    /// librdkafka while the group coordinator is away (a revocation waits
    /// for every outstanding commit).
    committed: HashMap<TopicPartition, u64>,
    last_flush: Instant,
    last_checkpoint: Instant,
}

impl<T: PartitionedTask> PartitionedConsumer<T> {
    /// Joins `config.group` on `config.topics`.
    pub fn new(config: RuntimeConfig, log: &dyn ReadingLog, task: T) -> Result<Self, T::Error> {
        let consumer = log.consumer(&config.group, &config.topics).map_err(T::Error::from_log)?;
        Ok(Self::with_consumer(config, consumer, task))
    }

    /// Runs `task` on a consumer that already joined its group.
    pub fn with_consumer(config: RuntimeConfig, consumer: Box<dyn LogConsumer>, task: T) -> Self {
        let now = Instant::now();
        Self {
            config,
            consumer,
            task,
            owned: BTreeMap::new(),
            unrestored: BTreeSet::new(),
            restore_delays: backoff(),
            restore_not_before: None,
            joined: false,
            committed: HashMap::new(),
            last_flush: now,
            last_checkpoint: now,
        }
    }

    pub fn task(&self) -> &T {
        &self.task
    }

    /// The restored partitions and their state.
    pub fn states(&self) -> &BTreeMap<TopicPartition, T::State> {
        &self.owned
    }

    /// Assigned partitions not restored yet.
    pub fn unrestored(&self) -> &BTreeSet<TopicPartition> {
        &self.unrestored
    }

    /// Next offset to process of each restored partition whose position the task knows.
    pub fn positions(&self) -> Vec<(TopicPartition, u64)> {
        self.owned.iter().filter_map(|(partition, state)| Some((partition.clone(), T::next_offset(state)?))).collect()
    }

    /// Polls once and processes what came; flushes when the flush interval passed.
    pub async fn step(&mut self) -> Result<Step, T::Error> {
        self.restore_unrestored().await?;
        let polled = self
            .consumer
            .poll(self.config.max_poll_records, self.config.poll_timeout)
            .await
            .map_err(T::Error::from_log)?;
        let step = match polled {
            Polled::Assigned(partitions) => {
                self.joined = true;
                self.unrestored.extend(partitions);
                self.restore_not_before = None;
                self.restore_unrestored().await?;
                Step::Rebalanced
            }
            Polled::Revoked(partitions) => {
                self.release_all(&partitions, Release::Revoked);
                Step::Rebalanced
            }
            Polled::Lost(partitions) => {
                tracing::warn!(?partitions, "partitions lost: the group gave them to another member (the session expired); nothing more is written of them");
                self.release_all(&partitions, Release::Lost);
                Step::Rebalanced
            }
            Polled::Records(batches) => {
                let now = Instant::now();
                let mut count = 0;
                for batch in batches {
                    // Records of an unrestored partition are read again once it is restored.
                    let Some(state) = self.owned.get_mut(&batch.partition) else { continue };
                    count += batch.records.len();
                    self.task.process(&batch.partition, state, batch.records, now);
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

    /// Restores the unrestored partitions whose retry is due, one after the other.
    async fn restore_unrestored(&mut self) -> Result<(), T::Error> {
        if self.unrestored.is_empty() || self.restore_not_before.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        let waiting: Vec<TopicPartition> = self.unrestored.iter().cloned().collect();
        for partition in waiting {
            match self.task.restore(&partition).await {
                Ok(Some(restored)) => {
                    if let Some(offset) = restored.start_at {
                        self.consumer.seek(&partition, offset).map_err(T::Error::from_log)?;
                    }
                    self.owned.insert(partition.clone(), restored.state);
                    self.unrestored.remove(&partition);
                }
                Ok(None) => {
                    self.unrestored.remove(&partition);
                }
                Err(err) if err.is_retryable() => {
                    let pause = next_pause(&mut self.restore_delays);
                    self.restore_not_before = Some(Instant::now() + pause);
                    tracing::warn!(
                        %partition, error = %err, ?pause, unrestored = self.unrestored.len(),
                        "restoring a partition failed; its records wait until a retry restores it"
                    );
                    break;
                }
                Err(err) => return Err(err),
            }
        }
        if self.unrestored.is_empty() {
            self.restore_delays = backoff();
            self.restore_not_before = None;
        }
        self.export_assignment();
        Ok(())
    }

    fn release_all(&mut self, partitions: &[TopicPartition], why: Release) {
        for partition in partitions {
            self.unrestored.remove(partition);
            self.committed.remove(partition);
            if let Some(state) = self.owned.remove(partition) {
                tracing::info!(%partition, ?why, "partition released");
                self.task.release(partition, state, why);
            }
        }
        self.export_assignment();
    }

    fn export_assignment(&self) {
        metrics::gauge!(self.config.metrics.assigned).set(self.owned.len() as f64);
        metrics::gauge!(self.config.metrics.unrestored).set(self.unrestored.len() as f64);
    }

    /// Has the task write what is due; with `checkpoint`, its partitions'
    /// state and offsets too. Commits what the task reports.
    pub async fn flush(&mut self, checkpoint: bool) -> Result<(), T::Error> {
        self.flush_as(FlushKind { checkpoint, last: false }).await
    }

    async fn flush_as(&mut self, kind: FlushKind) -> Result<(), T::Error> {
        let outcome = self.task.flush(&mut self.owned, kind).await?;
        for partition in &outcome.fenced {
            if let Some(state) = self.owned.remove(partition) {
                metrics::counter!(self.config.metrics.fenced).increment(1);
                tracing::warn!(%partition, "fenced off: a newer owner claimed the partition; this member stops writing it");
                self.task.release(partition, state, Release::Fenced);
            }
        }
        if !outcome.fenced.is_empty() {
            self.export_assignment();
        }
        for (partition, offset) in &outcome.seek {
            self.consumer.seek(partition, *offset).map_err(T::Error::from_log)?;
        }
        let commit: Vec<(TopicPartition, u64)> = outcome
            .commit
            .into_iter()
            .filter(|(partition, offset)| {
                self.owned.contains_key(partition) && self.committed.get(partition) != Some(offset)
            })
            .collect();
        if !commit.is_empty() {
            match (self.consumer.commit(&commit).await, self.config.commits) {
                (Ok(()), _) => self.committed.extend(commit),
                (Err(err), Commits::Informational) => {
                    tracing::debug!(%err, "committing checkpointed offsets to the group failed");
                }
                (Err(err), Commits::Progress) => return Err(T::Error::from_log(err)),
            }
        }
        let now = Instant::now();
        if kind.checkpoint {
            self.last_checkpoint = now;
        }
        self.last_flush = now;
        Ok(())
    }

    /// Has the task write everything pending (every open segment, a
    /// checkpoint of every partition), as at shutdown.
    pub async fn finish(&mut self) -> Result<(), T::Error> {
        self.flush_as(FlushKind { checkpoint: true, last: true }).await
    }

    /// Drops every partition's state and restores it again from its last
    /// checkpoint (after a failed write the task cannot tell what reached the store).
    pub fn restart_partitions(&mut self) {
        let partitions: Vec<TopicPartition> = self.owned.keys().cloned().collect();
        self.release_all(&partitions, Release::Restart);
        self.unrestored.extend(partitions);
        self.restore_not_before = None;
    }

    /// Records in the log after the positions of the restored partitions.
    pub async fn lag(&self, log: &dyn ReadingLog) -> Result<u64, T::Error> {
        let mut ends: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        let mut lag = 0u64;
        for (partition, state) in &self.owned {
            let Some(position) = T::next_offset(state) else { continue };
            if !ends.contains_key(&partition.topic) {
                let topic_ends = log.end_offsets(&partition.topic).await.map_err(T::Error::from_log)?;
                ends.insert(Arc::clone(&partition.topic), topic_ends);
            }
            let end = ends[&partition.topic].get(partition.partition as usize).copied().unwrap_or(0);
            lag += end.saturating_sub(position);
        }
        metrics::gauge!(self.config.metrics.lag).set(lag as f64);
        Ok(lag)
    }

    /// Whether the group gave this member its partitions, every one of them
    /// is restored and processed up to the log's end.
    pub async fn caught_up(&self, log: &dyn ReadingLog) -> Result<bool, T::Error> {
        Ok(self.joined && self.unrestored.is_empty() && self.lag(log).await? == 0)
    }

    /// Processes until every assigned partition is at the log's end, then
    /// flushes and checkpoints.
    pub async fn drain(&mut self, log: &dyn ReadingLog) -> Result<(), T::Error> {
        loop {
            if self.step().await? == Step::Idle && self.caught_up(log).await? {
                return self.finish().await;
            }
        }
    }

    /// Runs until `shutdown` is cancelled, then flushes and checkpoints.
    /// After a retryable error it pauses (jittered, growing) and restores
    /// every partition from its checkpoint; any other error ends the run.
    pub async fn run(&mut self, log: &dyn ReadingLog, shutdown: &CancellationToken) -> Result<(), T::Error> {
        let mut last_lag_check: Option<Instant> = None;
        let mut failures = backoff();
        // Shutdown is only looked at between steps: a step cancelled halfway
        // would lose records it took from the log or changes it took for the store.
        while !shutdown.is_cancelled() {
            let mut outcome = self.step().await.map(drop);
            if outcome.is_ok() && last_lag_check.is_none_or(|at| at.elapsed() >= LAG_CHECK_INTERVAL) {
                last_lag_check = Some(Instant::now());
                outcome = self.lag(log).await.map(|lag| self.task.log_progress(&self.owned, lag));
            }
            match outcome {
                Ok(()) => failures = backoff(),
                Err(err) if err.is_retryable() => {
                    metrics::counter!(self.config.metrics.recoveries).increment(1);
                    let pause = next_pause(&mut failures);
                    tracing::warn!(error = %err, ?pause, "a server is unavailable; restoring from the checkpoints after a pause");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(err),
                        () = tokio::time::sleep(pause) => {}
                    }
                    self.restart_partitions();
                }
                Err(err) => return Err(err),
            }
        }
        tracing::info!(group = %self.config.group, "stopping: final flush and checkpoint");
        self.finish().await
    }
}
