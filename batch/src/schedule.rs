//! The batch on a schedule (`auth up`): every `batch.scheduleSecs` the days of
//! the last week that have master data are recomputed, reconciled with the
//! stream and, once settled and archived ([`ArchiveWatch`], which never
//! waits), restated in the serving store.

use std::time::Duration;

use auth_core::ports::{ReadingLog, ServingStore};
use auth_core::{PipelineSpec, utility_topic};
use auth_master::{MasterStore, date_of, dates};
use auth_runtime::CancellationToken;
use chrono::{Days, NaiveDate};

use crate::settle::ArchiveWatch;
use crate::{BatchError, BatchJob, ResultsDb, Serving, run_day};

/// How many days back the scheduled batch recomputes.
const DAYS_BACK: u64 = 7;

/// Whether the master data holds readings of `date` for any of the spec's utilities.
pub async fn has_master_data(job: &BatchJob, spec: &PipelineSpec, date: NaiveDate) -> Result<bool, BatchError> {
    for &utility in &spec.utilities {
        if !job.files(utility, date).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs until `shutdown` is cancelled. A day that fails is logged and tried
/// again at the next tick; only unreadable master data ends the schedule.
pub async fn run(
    spec: &PipelineSpec,
    pipeline: &str,
    master: MasterStore,
    store: &dyn ServingStore,
    log: &dyn ReadingLog,
    results: &ResultsDb,
    shutdown: &CancellationToken,
) -> Result<(), BatchError> {
    let job = BatchJob::new(master.clone(), spec.batch.memory_limit_bytes).with_validation(spec.batch.validation)
        .with_estimation(spec.batch.estimation);
    let mut watch = ArchiveWatch::new(spec.utilities.iter().map(|&utility| utility_topic(pipeline, utility)).collect());
    let mut every = tokio::time::interval(Duration::from_secs(u64::from(spec.batch.schedule_secs)));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        let archived = match watch.look(log, &master).await {
            Ok(archived) => archived,
            Err(err) => {
                tracing::warn!(error = %err, "the archiver's progress is unknown: trying again at the next tick");
                continue;
            }
        };
        let serving = Serving { store, settle_ms: spec.settle_ms(), archived };
        let now_ms = auth_core::now_ms();
        let today = date_of(now_ms);
        for date in dates(today.checked_sub_days(Days::new(DAYS_BACK)).unwrap_or(today), today) {
            if !has_master_data(&job, spec, date).await? {
                continue;
            }
            match run_day(&job, results, Some(&serving), date, &spec.utilities, now_ms).await {
                Ok(summary) => tracing::info!("{}", summary.line()),
                Err(err) => tracing::warn!(%date, error = %err, "scheduled batch failed"),
            }
        }
    }
}
