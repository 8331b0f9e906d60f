//! One date, start to end: compute, reconcile, write, restate.

use std::time::Instant;

use auth_core::ports::{PortError, ServingStore};
use auth_core::Utility;
use chrono::NaiveDate;

use crate::fold::DayOutputs;
use crate::job::{BatchError, BatchJob};
use crate::restate::{restate, stream_totals};
use crate::settle::Archived;
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
    /// A day is restated once this many ms have passed after its end (the
    /// stream's allowed lateness): before, the stream may still change it...
    pub settle_ms: i64,
    /// ... and once the master data holds what the log held by then ([`crate::settle::archived`]).
    pub archived: Archived,
}

/// Whether a day's restatement is due.
enum Due {
    Yes,
    /// The stream may still change the day.
    NotSettled,
    /// Settled, but the master data may not hold all of the day yet: why.
    WaitsForArchiver(String),
}

/// When `date` settles: once every region's local day of it has ended
/// (Hawaii's last, among the shipped regions), `settle_ms` later.
fn settled_at_ms(date: NaiveDate, settle_ms: i64) -> i64 {
    auth_core::local_day::LocalDays::of(date).span().end + settle_ms
}

/// The newest date settled at `now_ms`: what a daily run computes by
/// default, whatever hour of the day it runs at.
pub fn newest_settled_date(now_ms: i64, settle_ms: i64) -> NaiveDate {
    let mut date = auth_master::date_of(now_ms);
    while settled_at_ms(date, settle_ms) > now_ms
        && let Some(before) = date.pred_opt()
    {
        date = before;
    }
    date
}

impl Serving<'_> {
    fn restatement_due(&self, date: NaiveDate, now_ms: i64) -> Due {
        let settled_ms = settled_at_ms(date, self.settle_ms);
        if settled_ms > now_ms {
            return Due::NotSettled;
        }
        Due::WaitsForArchiver(match &self.archived {
            Archived::Before(archived_ms) if settled_ms <= *archived_ms => return Due::Yes,
            Archived::Before(archived_ms) => format!(
                "the master data holds the log only up to {archived_ms} ms, before the day settled at {settled_ms} ms"
            ),
            Archived::Behind { partition, archived_before, log_end } => format!(
                "the archiver is behind on {partition}: archived before offset {archived_before}, the log ends at {log_end}"
            ),
        })
    }
}

/// What one date's run did.
#[derive(Debug, Clone, PartialEq)]
pub struct DaySummary {
    pub date: NaiveDate,
    pub outputs: DayOutputs,
    pub reconciliation: Vec<Reconciliation>,
    /// Empty when there was no serving store or the day had not settled.
    pub restatements: Vec<(Utility, Restatement)>,
    /// Why a day past its settle time was not restated (the archiver is behind).
    pub restatement_waits: Option<String>,
    pub compute_ms: u64,
    pub write_ms: u64,
    pub restate_ms: u64,
}

impl DaySummary {
    /// One line: rows written, totals, drift and restatement per utility.
    pub fn line(&self) -> String {
    let mut line = format!(
        "{}: {} customer days, {} region hours, {} top customers, {} meters with gaps, {} readings flagged suspect, \
         {} intervals edited; compute {} ms, write {} ms, restate {} ms",
        self.date,
        self.outputs.customers.len(),
        self.outputs.region_hours.len(),
        self.outputs.top_customers.len(),
        self.outputs.meter_gaps.len(),
        self.outputs.suspect_intervals.len(),
        self.outputs.edited_intervals.len(),
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
    if let Some(reason) = &self.restatement_waits {
        line.push_str(&format!("; not restated yet: {reason}"));
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
    // Decided before the master data is read: what the archiver had written by then is all in the computation.
    let due = serving.map(|serving| serving.restatement_due(date, now_ms));
    let inputs = results.day_inputs(date, utilities, now_ms).await?;
    let outputs = job.compute(date, utilities, inputs).await?;
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
                batch_estimated: total.estimated,
                stream_total: stream.map(|aggregate| aggregate.sum),
                stream_readings: stream.map(|aggregate| aggregate.count),
            }
        })
        .collect();
    let written = Instant::now();
    results.replace_date(date, &outputs, &reconciliation, now_ms).await?;
    let write_ms = written.elapsed().as_millis() as u64;
    let restated = Instant::now();
    let mut restatements = Vec::new();
    let mut restatement_waits = None;
    if let (Some(serving), Some(due)) = (serving, due) {
        match due {
            Due::Yes => restatements = restate(serving.store, date, now_ms.max(0) as u64, &outputs).await?,
            Due::WaitsForArchiver(reason) => restatement_waits = Some(reason),
            Due::NotSettled => {}
        }
        for (utility, restatement) in &restatements {
            results.record_restatement(date, *utility, restatement, now_ms).await?;
        }
    }
    let restate_ms = restated.elapsed().as_millis() as u64;
    let duration_ms = started.elapsed().as_millis() as i64;
    results.record_run(date, now_ms + duration_ms, duration_ms).await?;
    metrics::counter!(crate::METRIC_DAYS).increment(1);
    Ok(DaySummary { date, outputs, reconciliation, restatements, restatement_waits, compute_ms, write_ms, restate_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text).map(|instant| instant.timestamp_millis()).unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    #[test]
    fn a_date_settles_once_hawaiis_day_of_it_has_ended() {
        let date = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap_or_else(|err| panic!("{text}: {err}"));
        let settle_ms = 120_000;
        assert_eq!(newest_settled_date(utc("2026-12-08T01:30:00Z"), settle_ms), date("2026-12-06"), "the US is still in 7 December");
        assert_eq!(newest_settled_date(utc("2026-12-08T10:01:59Z"), settle_ms), date("2026-12-06"));
        assert_eq!(newest_settled_date(utc("2026-12-08T10:02:00Z"), settle_ms), date("2026-12-07"), "Hawaii's day ended at 10:00 UTC");
        assert_eq!(newest_settled_date(utc("2026-12-08T23:59:00Z"), settle_ms), date("2026-12-07"));
    }
}
