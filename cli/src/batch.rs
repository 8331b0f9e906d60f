//! `auth batch`: recomputes days from the master data into the results
//! database, reconciles them with the stream and restates the serving store.

use std::time::Instant;

use anyhow::Context;
use auth_adapters::Embedded;
use auth_batch::{BatchJob, ResultsDb, Serving, run_day, settle};
use auth_core::PipelineSpec;
use auth_core::spec::{SimulatorMode, SimulatorSpec};
use auth_ingest::Simulator;
use auth_core::batch_report::BatchReport;
use auth_core::ports::ServingStore;
use auth_master::{MasterStore, parse_date};
use chrono::{Days, NaiveDate};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::CommonArgs;

/// With `--redis-url` (or the spec's `serving.url`), the stream's windows are
/// reconciled and restated (settled days, once the archiver has passed the
/// log's end, which needs `--kafka-url` or `log.url`); without it, neither is done.
#[derive(Args)]
pub struct BatchArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The date to recompute, YYYY-MM-DD: each customer's local day of it
    /// (default: the newest date every region's day of which has ended and settled).
    #[arg(long, value_parser = date_arg, conflicts_with_all = ["from", "to"])]
    date: Option<NaiveDate>,
    /// First date of a range (with --to; both included).
    #[arg(long, value_parser = date_arg, requires = "to")]
    from: Option<NaiveDate>,
    /// Last date of a range.
    #[arg(long, value_parser = date_arg, requires = "from")]
    to: Option<NaiveDate>,
    /// Master data location instead of the spec's `archive.url`.
    #[arg(long, env = "AUTH_MASTER_URL")]
    master_url: Option<String>,
    /// Results database instead of the spec's `batch.databaseUrl`.
    #[arg(long, env = "AUTH_DATABASE_URL")]
    database_url: Option<String>,
    /// Query engine memory instead of the spec's `batch.memoryLimitBytes`.
    #[arg(long)]
    memory_limit_bytes: Option<u64>,
    /// Also write what the run did here, as JSON (on Kubernetes the
    /// container's termination message, which the pipeline's status shows).
    #[arg(long, env = "AUTH_BATCH_REPORT")]
    report_file: Option<std::path::PathBuf>,
}

pub fn date_arg(text: &str) -> Result<NaiveDate, String> {
    parse_date(text).map_err(|err| format!("{text:?} is not a YYYY-MM-DD date: {err}"))
}

/// Applies the flags to the spec.
fn spec_with_flags(args: &BatchArgs) -> anyhow::Result<PipelineSpec> {
    let mut spec = args.common.spec()?;
    if let Some(url) = &args.master_url {
        spec.archive.url = url.clone();
    }
    if let Some(url) = &args.database_url {
        spec.batch.database_url = url.clone();
    }
    if let Some(limit) = args.memory_limit_bytes {
        spec.batch.memory_limit_bytes = limit;
    }
    crate::common::check(&spec)?;
    Ok(spec)
}

pub async fn run(args: BatchArgs) -> anyhow::Result<()> {
    let spec = spec_with_flags(&args)?;
    let days = match (args.date, args.from, args.to) {
        (Some(date), _, _) => vec![date],
        (None, Some(from), Some(to)) => {
            anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
            auth_master::dates(from, to)
        }
        _ => vec![auth_batch::newest_settled_date(auth_core::now_ms(), spec.settle_ms())],
    };
    let mut report = BatchReport {
        first_day: days.first().map(ToString::to_string).unwrap_or_default(),
        last_day: days.last().map(ToString::to_string).unwrap_or_default(),
        ..BatchReport::default()
    };
    let outcome = run_days(&args, &spec, &days, &mut report).await;
    if let Err(err) = &outcome
        && report.days_recomputed == 0
        && report.failed_days == 0
    {
        // The run stopped before any day (a server it needs, the archiver's
        // progress): each day fails for that reason, so the report says why.
        for date in &days {
            report.fail(date.to_string(), &format!("{err:#}"));
        }
    }
    report.finished_ms = auth_core::now_ms();
    if let Some(path) = &args.report_file
        && let Err(err) = std::fs::write(path, report.to_json())
    {
        tracing::warn!(path = %path.display(), error = %err, "could not write the batch report (--report-file / AUTH_BATCH_REPORT)");
    }
    outcome
}

/// Recomputes `days`, counting into `report`; fails when a day failed.
async fn run_days(args: &BatchArgs, spec: &PipelineSpec, days: &[NaiveDate], report: &mut BatchReport) -> anyhow::Result<()> {
    let master = MasterStore::open(&spec.archive.url).context("archive.url / --master-url")?;
    let job = BatchJob::new(master.clone(), spec.batch.memory_limit_bytes).with_validation(spec.batch.validation)
        .with_estimation(spec.batch.estimation);
    let results = ResultsDb::connect(&spec.batch.database_url).await.context("batch.databaseUrl / --database-url")?;
    let store: Option<std::sync::Arc<dyn ServingStore>> = match spec.serving.url {
        Some(_) => Some(auth_adapters::store(spec, &args.common.pipeline, "batch", Embedded::Refused).await?),
        None => {
            tracing::info!("no serving store named (serving.url / --redis-url): no reconciliation with the stream, no restatement");
            None
        }
    };
    let serving = match store.as_deref() {
        Some(store) => {
            let log = auth_adapters::log(spec, "batch", Embedded::Refused)?;
            let topics: Vec<String> =
                spec.utilities.iter().map(|&utility| auth_core::utility_topic(&args.common.pipeline, utility)).collect();
            let archived = settle::archived(log.as_ref(), &master, &topics, settle::archive_wait(spec.archive.roll_secs))
                .await
                .context("how far the archiver got (restatement waits for it)")?;
            Some(Serving { store, settle_ms: spec.settle_ms(), archived })
        }
        None => None,
    };
    let started = Instant::now();
    let bar = ProgressBar::new(days.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} batch [{bar:30}] {pos}/{len} days {msg} ({elapsed})")
            .context("progress bar template")?,
    );
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for &date in days {
        bar.set_message(format!("{date}"));
        match run_day(&job, &results, serving.as_ref(), date, &spec.utilities, auth_core::now_ms()).await {
            // Printed even without a terminal (a CronJob's log), where the bar draws nothing.
            Ok(summary) => {
                bar.suspend(|| println!("{}", summary.line()));
                report.days_recomputed += 1;
                report.readings += summary.outputs.totals.iter().map(|(_, total)| total.readings).sum::<u64>();
                report.customer_days += summary.outputs.customers.len() as u64;
                for (_, restatement) in &summary.restatements {
                    report.customers_restated += restatement.customers_restated;
                    report.customers_changed += restatement.customers_changed;
                }
                done.push(summary);
            }
            Err(err) => {
                bar.suspend(|| println!("{date}: {err}"));
                report.fail(date.to_string(), &err.to_string());
                failures.push(format!("{date}: {err}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let readings: u64 = done.iter().flat_map(|day| day.outputs.totals.iter()).map(|(_, total)| total.readings).sum();
    println!(
        "batch: {} of {} days recomputed, {readings} readings, in {:.1} s",
        done.len(),
        done.len() + failures.len(),
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(failures.is_empty(), "batch failed for {} day(s):\n  {}", failures.len(), failures.join("\n  "));
    Ok(())
}

/// Days of history `auth up` backfills (before today) when the master data has none.
const HISTORY_DAYS: u64 = 3;
/// The backfilled history's heartbeat: one reading per meter and registered
/// interval, so that the history is complete against the registry.
const HISTORY_HEARTBEAT_SECS: u32 = crate::registry::SIMULATED_INTERVAL_SECS;

/// `auth up`'s history of today so far, on a first start (the master data
/// has nothing of today yet): the fleet from today's UTC midnight, clean and
/// at the history's heartbeat, to send through the log before the live
/// readings. Without it the local days that began before the start would
/// lack their first hours: today's, and yesterday's, which in the US ends
/// in today's UTC date (after [`backfill_history`]'s whole UTC days). `None`
/// on a restart.
pub async fn history_of_today(spec: &PipelineSpec) -> anyhow::Result<Option<(Simulator, SimulatorSpec)>> {
    let master = MasterStore::open(&spec.archive.url).context("archive.url")?;
    let job = BatchJob::new(master, spec.batch.memory_limit_bytes);
    let today = auth_master::date_of(auth_core::now_ms());
    if auth_batch::schedule::has_master_data(&job, spec, today).await? {
        return Ok(None);
    }
    let history =
        SimulatorSpec { heartbeat_secs: HISTORY_HEARTBEAT_SECS, mode: SimulatorMode::AsFastAsPossible, ..crate::backfill::clean(&spec.simulator) };
    Ok(Some((Simulator::new(&history, auth_master::day_start_ms(today)), history)))
}

/// `auth up`'s history: backfills the last days where the master data has none.
pub async fn backfill_history(spec: &PipelineSpec) -> anyhow::Result<()> {
    let master = MasterStore::open(&spec.archive.url).context("archive.url")?;
    let job = BatchJob::new(master, spec.batch.memory_limit_bytes).with_validation(spec.batch.validation)
        .with_estimation(spec.batch.estimation);
    let today = auth_master::date_of(auth_core::now_ms());
    let first = today.checked_sub_days(Days::new(HISTORY_DAYS)).unwrap_or(today);
    let mut history = spec.clone();
    history.simulator.heartbeat_secs = HISTORY_HEARTBEAT_SECS;
    for date in auth_master::dates(first, today.pred_opt().unwrap_or(today)) {
        if auth_batch::schedule::has_master_data(&job, spec, date).await? {
            continue;
        }
        let written = crate::backfill::run(&history, date, date, &spec.archive.url, 1).await?;
        tracing::info!(%date, readings = written.readings, "history backfilled");
    }
    Ok(())
}
