//! What one run of `auth batch` did, as it reports it to whoever started it:
//! on Kubernetes the container's termination message, which the operator
//! reads into the pipeline's status. Kept under the kubelet's 4 KiB limit.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most the kubelet keeps of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4_096;
/// Failed days listed by name; the count covers the rest.
const LISTED_FAILURES: usize = 10;
/// Characters of each failure's error kept.
const ERROR_CHARS: usize = 200;

/// One run of the batch over one or more days.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    /// Days recomputed into the results database.
    pub days_recomputed: u32,
    /// The first and last of the days the run was asked for (YYYY-MM-DD).
    pub first_day: String,
    pub last_day: String,
    /// Readings in the recomputed days.
    pub readings: u64,
    /// Customer-day rows written.
    pub customer_days: u64,
    /// Customers whose stream windows the run restated, and how many of them changed.
    pub customers_restated: u64,
    pub customers_changed: u64,
    /// Days that failed (the run fails, and its Job retries it), the first few by name.
    pub failed_days: u32,
    #[serde(default)]
    pub failures: Vec<FailedDay>,
    /// When the run ended, UTC ms.
    pub finished_ms: i64,
}

/// A day the run could not recompute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedDay {
    pub date: String,
    pub error: String,
}

impl BatchReport {
    /// Records a failed day; only the first few keep their date and a shortened error.
    pub fn fail(&mut self, date: String, error: &str) {
        self.failed_days += 1;
        if self.failures.len() < LISTED_FAILURES {
            self.failures.push(FailedDay { date, error: error.chars().take(ERROR_CHARS).collect() });
        }
    }

    /// The report as one line of JSON, within [`TERMINATION_MESSAGE_LIMIT`].
    pub fn to_json(&self) -> String {
        let mut report = self.clone();
        loop {
            let json = serde_json::to_string(&report).unwrap_or_default();
            if json.len() <= TERMINATION_MESSAGE_LIMIT || report.failures.is_empty() {
                return json;
            }
            report.failures.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_report_of_many_failures_stays_within_the_termination_message_limit_and_reads_back() {
        let mut report = BatchReport { first_day: "2026-01-01".into(), last_day: "2026-12-31".into(), ..BatchReport::default() };
        for day in 0..365 {
            report.fail(format!("day {day}"), &"the master data of this day could not be read ".repeat(20));
        }
        let json = report.to_json();
        assert!(json.len() <= TERMINATION_MESSAGE_LIMIT, "{} bytes", json.len());
        let read: BatchReport = serde_json::from_str(&json).unwrap();
        assert_eq!(read.failed_days, 365, "the count covers every failed day");
        assert_eq!(read.failures.len(), LISTED_FAILURES);
        assert!(read.failures.iter().all(|failure| failure.error.chars().count() == ERROR_CHARS));
    }
}
