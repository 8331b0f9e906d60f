//! One date, start to end: compute, reconcile, write, restate.

use std::time::Instant;

use auth_core::ports::{PortError, ServingStore};
use auth_core::Utility;
use chrono::NaiveDate;

use crate::fold::DayOutputs;
use crate::job::{BatchError, BatchJob};
use crate::restate::{restate, stream_totals};
use crate::results::{Reconciliation, ResultsDb, Restatement};
use auth_results::ResultsError;

#[derive(Debug, thiserror::Error)]
pub enum DayError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("serving store: {0}")]
    Store(#[from] PortError),
}

/// The serving store the stream writes, for reconciliation and restatement.
pub struct Serving<'a> {
    pub store: &'a dyn ServingStore,
    /// Pipeline name (the topics `<pipeline>.<utility>`) and partitions per topic,
    /// which place each customer's windows as the stream does.
    pub pipeline: &'a str,
    pub partitions: u32,
    /// A day is restated once this many ms have passed after its end (the
    /// stream's allowed lateness): before, the stream may still change it.
    pub settle_ms: i64,
}

/// What one date's run did.
#[derive(Debug, Clone, PartialEq)]
pub struct DaySummary {
    pub date: NaiveDate,
    pub outputs: DayOutputs,
    pub reconciliation: Vec<Reconciliation>,
    /// Empty when there was no serving store or the day had not settled.
    pub restatements: Vec<(Utility, Restatement)>,
    pub compute_ms: u64,
    pub write_ms: u64,
    pub restate_ms: u64,
}

impl DaySummary {
    /// One line: rows written, totals, drift and restatement per utility.
    pub fn line(&self) -> String {
    let mut line = format!(
        "{}: {} customer days, {} region hours, {} top customers; compute {} ms, write {} ms, restate {} ms",
        self.date,
        self.outputs.customers.len(),
        self.outputs.region_hours.len(),
        self.outputs.top_customers.len(),
        self.compute_ms,
        self.write_ms,
        self.restate_ms
    );
    for row in &self.reconciliation {
        line.push_str(&format!("; {} batch {:.3}", row.utility, row.batch_total));
        if let (Some(stream), Some(drift)) = (row.stream_total, row.drift()) {
            line.push_str(&format!(" stream {stream:.3} drift {drift:+.3}"));
        }
    }
    for (utility, restatement) in &self.restatements {
        line.push_str(&format!(
            "; {utility} restated {} customers, {} changed by {:+.3}",
            restatement.customers_restated, restatement.customers_changed, restatement.total_change
        ));
    }
    line
    }
}

/// Recomputes `date` and replaces its results; with `serving`, reconciles
/// with the stream and, once the day has settled, restates the store.
pub async fn run_day(
    job: &BatchJob,
    results: &ResultsDb,
    serving: Option<&Serving<'_>>,
    date: NaiveDate,
    utilities: &[Utility],
    now_ms: i64,
) -> Result<DaySummary, DayError> {
    let started = Instant::now();
    let outputs = job.compute(date, utilities).await?;
    let compute_ms = started.elapsed().as_millis() as u64;
    let streamed = match serving {
        Some(serving) => Some(stream_totals(serving.store, date).await?),
        None => None,
    };
    let reconciliation: Vec<Reconciliation> = outputs
        .totals
        .iter()
        .map(|&(utility, total)| {
            let stream = streamed.as_ref().and_then(|totals| totals.get(&utility));
            Reconciliation {
                utility,
                batch_total: total.total,
                batch_readings: total.readings,
                stream_total: stream.map(|aggregate| aggregate.sum),
                stream_readings: stream.map(|aggregate| aggregate.count),
            }
        })
        .collect();
    let written = Instant::now();
    results.replace_date(date, &outputs, &reconciliation, now_ms).await?;
    let write_ms = written.elapsed().as_millis() as u64;
    let restated = Instant::now();
    let settled = auth_master::day_start_ms(date) + 86_400_000 + serving.map_or(0, |serving| serving.settle_ms) <= now_ms;
    let mut restatements = Vec::new();
    if let Some(serving) = serving.filter(|_| settled) {
        restatements = restate(serving.store, serving.pipeline, serving.partitions, date, &outputs).await?;
        for (utility, restatement) in &restatements {
            results.record_restatement(date, *utility, restatement, now_ms).await?;
        }
    }
    let restate_ms = restated.elapsed().as_millis() as u64;
    let duration_ms = started.elapsed().as_millis() as i64;
    results.record_run(date, now_ms + duration_ms, duration_ms).await?;
    metrics::counter!(crate::METRIC_DAYS).increment(1);
    Ok(DaySummary { date, outputs, reconciliation, restatements, compute_ms, write_ms, restate_ms })
}
