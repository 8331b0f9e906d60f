//! The pipeline's last batch run, as its newest Job and the report its pod
//! left as termination message (`auth batch --report-file /dev/termination-log`).

use auth_core::batch_report::BatchReport;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pipeline's last batch run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchRun {
    /// The Job (the CronJob's, or one created from it).
    pub job: String,
    /// `Running`, `Succeeded` or `Failed`.
    pub outcome: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Times the run started again after failing (the Job's retries).
    pub retries: i32,
    /// What the last attempt did: days recomputed, readings, rows, restatements, failed days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<BatchReport>,
}

/// A batch run's known result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Failed,
}

impl BatchRun {
    pub fn failed(&self) -> bool {
        self.outcome == "Failed" || self.report.as_ref().is_some_and(|report| report.failed_days > 0)
    }

    /// What the run came to, once it is known: failed as soon as an attempt
    /// reports a failed day (the Job may still retry), else succeeded when the
    /// Job completed; `None` while it runs without a failure.
    pub fn verdict(&self) -> Option<Verdict> {
        if self.failed() {
            Some(Verdict::Failed)
        } else if self.outcome == "Succeeded" {
            Some(Verdict::Succeeded)
        } else {
            None
        }
    }

    /// This run, keeping what `before` (the status's earlier view of the same
    /// Job) knew: when a Job gives up, its controller deletes the pod whose
    /// termination message held the report, and the report would be lost.
    pub fn remembering(mut self, before: Option<&BatchRun>) -> Self {
        if let Some(before) = before.filter(|before| before.job == self.job) {
            if self.report.is_none() {
                self.report.clone_from(&before.report);
            }
            self.retries = self.retries.max(before.retries);
        }
        self
    }

    /// One sentence for the `Batch` condition.
    pub fn message(&self) -> String {
        let mut message = format!("job {} {}", self.job, self.outcome.to_lowercase());
        if let Some(report) = &self.report {
            message.push_str(&format!(
                ": {} day(s) recomputed ({} to {}), {} readings, {} customer days, {} customers restated",
                report.days_recomputed, report.first_day, report.last_day, report.readings, report.customer_days, report.customers_restated
            ));
            if report.failed_days > 0 {
                let listed: Vec<String> = report.failures.iter().map(|failure| format!("{}: {}", failure.date, failure.error)).collect();
                message.push_str(&format!("; {} day(s) failed: {}", report.failed_days, listed.join("; ")));
            }
        }
        if self.retries > 0 {
            message.push_str(&format!(" ({} retries)", self.retries));
        }
        message
    }
}

fn is_true(job: &Job, type_: &str) -> bool {
    job.status.as_ref().and_then(|status| status.conditions.as_ref()).is_some_and(|conditions| {
        conditions.iter().any(|condition| condition.type_ == type_ && condition.status == "True")
    })
}

/// The newest of `jobs` with the report of its newest pod among `pods`.
pub fn last_run(jobs: &[Job], pods: &[Pod]) -> Option<BatchRun> {
    let job = jobs.iter().max_by_key(|job| job.creation_timestamp().map(|time| time.0))?;
    let status = job.status.clone().unwrap_or_default();
    let outcome = if is_true(job, "Complete") {
        "Succeeded"
    } else if is_true(job, "Failed") {
        "Failed"
    } else {
        "Running"
    };
    let own_pods: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.labels().get("batch.kubernetes.io/job-name").is_some_and(|name| *name == job.name_any()))
        .collect();
    let containers = || own_pods.iter().flat_map(|pod| pod.status.iter().flat_map(|status| status.container_statuses.iter().flatten()));
    let restarts: i32 = containers().map(|container| container.restart_count).sum();
    let newest = own_pods.iter().max_by_key(|pod| pod.creation_timestamp().map(|time| time.0));
    let report = newest.and_then(|pod| {
        pod.status.as_ref()?.container_statuses.as_ref()?.iter().find_map(|container| {
            let terminated = |state: Option<&k8s_openapi::api::core::v1::ContainerState>| state?.terminated.as_ref()?.message.clone();
            let message = terminated(container.state.as_ref()).or_else(|| terminated(container.last_state.as_ref()))?;
            serde_json::from_str::<BatchReport>(message.trim()).ok()
        })
    });
    Some(BatchRun {
        job: job.name_any(),
        outcome: outcome.to_owned(),
        started: status.start_time.map(|time| time.0.to_string()),
        finished: status.completion_time.map(|time| time.0.to_string()),
        retries: restarts + status.failed.unwrap_or(0),
        report,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn job(name: &str, created: &str, condition: Option<&str>) -> Job {
        let conditions: Vec<serde_json::Value> =
            condition.into_iter().map(|type_| serde_json::json!({"type": type_, "status": "True"})).collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "status": {"startTime": created, "conditions": conditions, "failed": 0},
        }))
        .unwrap()
    }

    fn pod(job: &str, created: &str, restarts: i32, message: &str, last: bool) -> Pod {
        let state = serde_json::json!({"terminated": {"exitCode": 1, "message": message}});
        let (state, last_state) = if last { (serde_json::json!({"running": {}}), state) } else { (state, serde_json::json!({})) };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{job}-x"), "creationTimestamp": created, "labels": {"batch.kubernetes.io/job-name": job}},
            "status": {"containerStatuses": [{"name": "batch", "image": "auth", "imageID": "", "ready": false,
                "restartCount": restarts, "state": state, "lastState": last_state}]},
        }))
        .unwrap()
    }

    #[test]
    fn the_newest_job_and_its_report_make_the_last_run() {
        let report = BatchReport { days_recomputed: 1, first_day: "2026-11-30".into(), last_day: "2026-11-30".into(), readings: 3_000, ..BatchReport::default() };
        let jobs = [job("old", "2026-11-29T01:00:00Z", Some("Failed")), job("new", "2026-11-30T01:00:00Z", Some("Complete"))];
        let pods = [pod("old", "2026-11-29T01:00:00Z", 3, "{}", false), pod("new", "2026-11-30T01:00:00Z", 0, &report.to_json(), false)];
        let run = last_run(&jobs, &pods).unwrap();
        assert_eq!((run.job.as_str(), run.outcome.as_str(), run.retries), ("new", "Succeeded", 0));
        assert_eq!(run.report, Some(report));
        assert_eq!(run.verdict(), Some(Verdict::Succeeded));
        assert!(run.message().contains("1 day(s) recomputed (2026-11-30 to 2026-11-30), 3000 readings"), "{}", run.message());
        assert_eq!(last_run(&[], &pods), None);
    }

    #[test]
    fn a_given_up_job_whose_pod_was_deleted_keeps_the_report_seen_before() {
        let mut report = BatchReport { first_day: "2000-01-01".into(), last_day: "2000-01-01".into(), ..BatchReport::default() };
        report.fail("2000-01-01".into(), "no master data");
        let running = last_run(&[job("batch-empty", "2026-11-30T01:00:00Z", None)], &[pod("batch-empty", "2026-11-30T01:00:00Z", 3, &report.to_json(), true)]).unwrap();
        let given_up = last_run(&[job("batch-empty", "2026-11-30T01:00:00Z", Some("Failed"))], &[]).unwrap();
        assert_eq!(given_up.report, None, "the Job controller deleted the pod");
        let kept = given_up.remembering(Some(&running));
        assert_eq!((kept.outcome.as_str(), kept.retries), ("Failed", 3));
        assert!(kept.message().contains("1 day(s) failed: 2000-01-01: no master data"), "{}", kept.message());
        let other = last_run(&[job("batch-next", "2026-12-01T01:00:00Z", None)], &[]).unwrap();
        assert_eq!(other.remembering(Some(&running)).report, None, "another Job's report is not this one's");
    }

    #[test]
    fn a_failing_run_being_retried_reports_its_failed_days_from_the_last_attempt() {
        let mut report = BatchReport { first_day: "2026-11-30".into(), last_day: "2026-11-30".into(), ..BatchReport::default() };
        report.fail("2026-11-30".into(), "S3: connection refused");
        let run = last_run(&[job("batch-1", "2026-11-30T01:00:00Z", None)], &[pod("batch-1", "2026-11-30T01:00:00Z", 2, &report.to_json(), true)]).unwrap();
        assert_eq!((run.outcome.as_str(), run.retries), ("Running", 2));
        assert_eq!(run.verdict(), Some(Verdict::Failed), "failed while the Job still retries");
        assert!(run.message().contains("1 day(s) failed: 2026-11-30: S3: connection refused"), "{}", run.message());
        let unreadable = last_run(&[job("batch-2", "2026-11-30T01:00:00Z", Some("Failed"))], &[pod("batch-2", "2026-11-30T01:00:00Z", 0, "panicked", false)]).unwrap();
        assert_eq!((unreadable.outcome.as_str(), &unreadable.report), ("Failed", &None));
        assert_eq!(unreadable.verdict(), Some(Verdict::Failed));
    }
}
