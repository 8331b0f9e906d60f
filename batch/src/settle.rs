//! When a day may be restated: once the stream can no longer change it (its
//! end plus the pipeline's settle time has passed) *and* the archiver has put
//! in the master data every record the log held by then, for every partition
//! the utility topics have now (so partitions added since are waited for too).

use std::collections::VecDeque;
use std::time::Duration;

use auth_core::ports::{PortError, ReadingLog, TopicPartition};
use auth_master::MasterStore;
use auth_master::archiver::{ArchiveError, archive_progress};

/// How often the archiver's progress is read again while waiting for it.
const PROGRESS_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("reading log: {0}")]
    Log(#[from] PortError),
    #[error("archiver progress: {0}")]
    Progress(#[from] ArchiveError),
}

/// How far the master data holds the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Archived {
    /// Every record appended to the topics before this wall-clock time (ms) is archived.
    Before(i64),
    /// The archiver had not reached the log's end on this partition within the wait.
    Behind { partition: TopicPartition, archived_before: u64, log_end: u64 },
}

/// Reads the end of every partition of `topics` now, then waits up to `wait`
/// until the archiver's published progress has reached each of them.
#[tracing::instrument(level = "info", skip(log, master))]
pub async fn archived(log: &dyn ReadingLog, master: &MasterStore, topics: &[String], wait: Duration) -> Result<Archived, SettleError> {
    let started_ms = auth_core::now_ms();
    let deadline = tokio::time::Instant::now() + wait;
    let mut waiting = log_ends(log, topics).await?;
    loop {
        let mut behind = None;
        let mut still_waiting = Vec::with_capacity(waiting.len());
        for (partition, end) in waiting {
            let progress = archive_progress(master, &partition).await?;
            if progress.archived_before < end {
                behind.get_or_insert((partition.clone(), progress.archived_before, end));
                still_waiting.push((partition, end));
            }
        }
        waiting = still_waiting;
        let Some((partition, archived_before, log_end)) = behind else {
            return Ok(Archived::Before(started_ms));
        };
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(%partition, archived_before, log_end, "the archiver is behind the log");
            return Ok(Archived::Behind { partition, archived_before, log_end });
        }
        tokio::time::sleep(PROGRESS_POLL).await;
    }
}

/// The ends of the log a [`ArchiveWatch`] has read and the archiver not yet passed, at most.
const CAPTURES_KEPT: usize = 1_024;

/// How far the master data holds the log, watched by a batch on a schedule
/// without waiting: each look reads the log's ends again, and the newest ends
/// read earlier that the archiver has passed since tell how far it got.
pub struct ArchiveWatch {
    topics: Vec<String>,
    /// Ends of every partition (wall-clock time read, ends), oldest first.
    captures: VecDeque<(i64, Vec<(TopicPartition, u64)>)>,
    /// When the newest ends the archiver has passed were read.
    passed_ms: Option<i64>,
}

impl ArchiveWatch {
    pub fn new(topics: Vec<String>) -> Self {
        Self { topics, captures: VecDeque::new(), passed_ms: None }
    }

    /// Reads the log's ends, then the archiver's progress against the ends
    /// read so far; an archiver that keeps up passes each within `archive.rollSecs`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn look(&mut self, log: &dyn ReadingLog, master: &MasterStore) -> Result<Archived, SettleError> {
        let read_ms = auth_core::now_ms();
        let ends = log_ends(log, &self.topics).await?;
        if self.captures.len() >= CAPTURES_KEPT {
            // The archiver is far behind: keep the oldest ends, which it passes first.
            self.captures.pop_back();
        }
        self.captures.push_back((read_ms, ends));
        let mut progress = std::collections::HashMap::new();
        let mut behind = None;
        while let Some((captured_ms, ends)) = self.captures.front() {
            for (partition, end) in ends {
                let archived_before = match progress.get(partition) {
                    Some(&archived_before) => archived_before,
                    None => {
                        let archived_before = archive_progress(master, partition).await?.archived_before;
                        progress.insert(partition.clone(), archived_before);
                        archived_before
                    }
                };
                if archived_before < *end {
                    behind = Some(Archived::Behind { partition: partition.clone(), archived_before, log_end: *end });
                    break;
                }
            }
            if behind.is_some() {
                break;
            }
            self.passed_ms = Some(*captured_ms);
            self.captures.pop_front();
        }
        Ok(match (self.passed_ms, behind) {
            (Some(passed_ms), _) => Archived::Before(passed_ms),
            (None, Some(behind)) => behind,
            // Every capture passed, the one just read too.
            (None, None) => Archived::Before(read_ms),
        })
    }
}

/// The end of every partition of `topics` that holds records.
async fn log_ends(log: &dyn ReadingLog, topics: &[String]) -> Result<Vec<(TopicPartition, u64)>, PortError> {
    let mut ends = Vec::new();
    for topic in topics {
        for (partition, end) in log.end_offsets(topic).await?.into_iter().enumerate() {
            if end > 0 {
                ends.push((TopicPartition::new(topic, partition as u32), end));
            }
        }
    }
    Ok(ends)
}

/// How long the batch waits for the archiver: a busy partition's segment is
/// written once its first record waited `archive.rollSecs`.
pub fn archive_wait(roll_secs: u32) -> Duration {
    Duration::from_secs(2 * u64::from(roll_secs) + 10)
}
