//! `auth batch`: recomputes days from the master data into the results
//! database, reconciles them with the stream and restates the serving store.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use auth_batch::{BatchJob, DaySummary, ResultsDb, Serving, run_day};
use auth_core::PipelineSpec;
use auth_core::ports::ServingStore;
use auth_master::{MasterStore, parse_date};
use chrono::{Days, NaiveDate};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::adapters::{self, ServerArgs};

#[derive(Args)]
pub struct BatchArgs {
    /// Pipeline spec (YAML): `archive.url`, `batch.*`, and `serving.url` for reconciliation.
    #[arg(long, env = "AUTH_CONFIG")]
    config: Option<PathBuf>,
    /// Pipeline name, to find the stream's windows in the serving store.
    #[arg(long, env = "AUTH_PIPELINE", default_value = "auth")]
    pipeline: String,
    /// The UTC date to recompute, YYYY-MM-DD (default: yesterday).
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
    /// Redis (the stream's serving store) for reconciliation and restatement; without it, neither is done.
    #[command(flatten)]
    servers: ServerArgs,
}

pub fn date_arg(text: &str) -> Result<NaiveDate, String> {
    parse_date(text).map_err(|err| format!("{text:?} is not a YYYY-MM-DD date: {err}"))
}

/// The dates in `[from, to]`.
pub fn dates(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|date| *date <= to).collect()
}

fn yesterday() -> NaiveDate {
    let today = auth_master::date_of(crate::up::now_ms());
    today.checked_sub_days(Days::new(1)).unwrap_or(today)
}

/// Applies the flags to the spec.
fn settle_spec(args: &BatchArgs) -> anyhow::Result<PipelineSpec> {
    let mut spec = args.servers.apply(crate::load_spec(args.config.as_deref())?)?;
    if let Some(url) = &args.master_url {
        spec.archive.url = url.clone();
    }
    if let Some(url) = &args.database_url {
        spec.batch.database_url = url.clone();
    }
    if let Some(limit) = args.memory_limit_bytes {
        spec.batch.memory_limit_bytes = limit;
    }
    let problems = spec.problems();
    anyhow::ensure!(problems.is_empty(), "invalid settings:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"));
    Ok(spec)
}

pub async fn run(args: BatchArgs) -> anyhow::Result<()> {
    let spec = settle_spec(&args)?;
    let days = match (args.date, args.from, args.to) {
        (Some(date), _, _) => vec![date],
        (None, Some(from), Some(to)) => {
            anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
            dates(from, to)
        }
        _ => vec![yesterday()],
    };
    let master = MasterStore::open(&spec.archive.url).context("archive.url / --master-url")?;
    let job = BatchJob::new(master, spec.batch.memory_limit_bytes);
    let results = ResultsDb::connect(&spec.batch.database_url).await.context("batch.databaseUrl / --database-url")?;
    let store: Option<std::sync::Arc<dyn ServingStore>> = match spec.serving.url {
        Some(_) => Some(adapters::store(&spec, &args.pipeline, "batch", false).await?),
        None => {
            tracing::info!("no serving store named (serving.url / --redis-url): no reconciliation with the stream, no restatement");
            None
        }
    };
    let serving = store.as_deref().map(|store| Serving {
        store,
        pipeline: &args.pipeline,
        partitions: spec.log.partitions,
        settle_ms: i64::from(spec.windows.allowed_lateness_secs + spec.windows.out_of_orderness_secs) * 1_000,
    });
    let started = Instant::now();
    let bar = ProgressBar::new(days.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} batch [{bar:30}] {pos}/{len} days {msg} ({elapsed})")
            .context("progress bar template")?,
    );
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for date in days {
        bar.set_message(format!("{date}"));
        match run_day(&job, &results, serving.as_ref(), date, &spec.utilities, crate::up::now_ms()).await {
            Ok(summary) => {
                bar.println(summary_line(&summary));
                done.push(summary);
            }
            Err(err) => {
                bar.println(format!("{date}: {err}"));
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

/// One line per day: rows written, totals, drift and restatement per utility.
pub fn summary_line(summary: &DaySummary) -> String {
    let mut line = format!(
        "{}: {} customer days, {} region hours, {} top customers; compute {} ms, write {} ms, restate {} ms",
        summary.date,
        summary.outputs.customers.len(),
        summary.outputs.region_hours.len(),
        summary.outputs.top_customers.len(),
        summary.compute_ms,
        summary.write_ms,
        summary.restate_ms
    );
    for row in &summary.reconciliation {
        line.push_str(&format!("; {} batch {:.3}", row.utility, row.batch_total));
        if let (Some(stream), Some(drift)) = (row.stream_total, row.drift()) {
            line.push_str(&format!(" stream {stream:.3} drift {drift:+.3}"));
        }
    }
    for (utility, restatement) in &summary.restatements {
        line.push_str(&format!(
            "; {utility} restated {} customers, {} changed by {:+.3}",
            restatement.customers_restated, restatement.customers_changed, restatement.total_change
        ));
    }
    line
}

/// Days of history `auth up` backfills (before today) when the master data has none.
const HISTORY_DAYS: u64 = 3;
/// The backfilled history's heartbeat: one reading per meter every 15 minutes.
const HISTORY_HEARTBEAT_SECS: u32 = 900;

/// `auth up`'s batch: backfills the last days' history where the master data
/// has none, then every `batch.scheduleSecs` recomputes the days of the last
/// week that have master data, reconciles them and restates the serving store.
pub async fn scheduled(
    spec: PipelineSpec,
    pipeline: String,
    store: std::sync::Arc<dyn ServingStore>,
    results: ResultsDb,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let master = MasterStore::open(&spec.archive.url).context("archive.url")?;
    let job = BatchJob::new(master, spec.batch.memory_limit_bytes);
    let today = auth_master::date_of(crate::up::now_ms());
    let first = today.checked_sub_days(Days::new(HISTORY_DAYS)).unwrap_or(today);
    let mut history = spec.clone();
    history.simulator.heartbeat_secs = HISTORY_HEARTBEAT_SECS;
    for date in dates(first, today.pred_opt().unwrap_or(today)) {
        if has_master_data(&job, &spec, date).await? {
            continue;
        }
        let written = crate::backfill::run(&history, date, date, &spec.archive.url, 1).await?;
        tracing::info!(%date, readings = written.readings, "history backfilled");
    }
    let serving = Serving {
        store: store.as_ref(),
        pipeline: &pipeline,
        partitions: spec.log.partitions,
        settle_ms: i64::from(spec.windows.allowed_lateness_secs + spec.windows.out_of_orderness_secs) * 1_000,
    };
    let mut every = tokio::time::interval(std::time::Duration::from_secs(u64::from(spec.batch.schedule_secs)));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
        }
        let now_ms = crate::up::now_ms();
        let today = auth_master::date_of(now_ms);
        for date in dates(today.checked_sub_days(Days::new(7)).unwrap_or(today), today) {
            if !has_master_data(&job, &spec, date).await? {
                continue;
            }
            match run_day(&job, &results, Some(&serving), date, &spec.utilities, now_ms).await {
                Ok(summary) => tracing::info!("{}", summary_line(&summary)),
                Err(err) => tracing::warn!(%date, error = %err, "scheduled batch failed"),
            }
        }
    }
}

async fn has_master_data(job: &BatchJob, spec: &PipelineSpec, date: NaiveDate) -> anyhow::Result<bool> {
    for &utility in &spec.utilities {
        if !job.files(utility, date).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}
