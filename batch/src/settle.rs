//! When a day may be restated: once the stream can no longer change it (its
//! end plus the pipeline's settle time has passed) *and* the archiver has put
//! in the master data every record the log held by then, for every partition
//! the utility topics have now (so partitions added since are waited for too).

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
    let mut waiting = Vec::new();
    for topic in topics {
        for (partition, end) in log.end_offsets(topic).await?.into_iter().enumerate() {
            if end > 0 {
                waiting.push((TopicPartition::new(topic, partition as u32), end));
            }
        }
    }
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

/// How long the batch waits for the archiver: a busy partition's segment is
/// written once its first record waited `archive.rollSecs`.
pub fn archive_wait(roll_secs: u32) -> Duration {
    Duration::from_secs(2 * u64::from(roll_secs) + 10)
}
