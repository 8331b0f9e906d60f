//! Operators' edits and approvals of intervals, and their audit log.
//!
//! An edit sets an interval's value; an approval keeps the value as read and
//! clears its `suspect` flag. The word in force on each interval lives in
//! `interval_edits`, which every batch run of the interval's day applies, so
//! a recomputation keeps it. Each change is also appended to
//! `interval_audit`, which nothing rewrites.

use auth_core::{Region, Utility};
use chrono::NaiveDate;
use serde::Serialize;

use crate::{Database, ResultsError, binding_optional_floats, parse_region, parse_utility, query_error};

/// An operator's word on one interval of one meter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalEdit {
    pub utility: Utility,
    pub meter_id: u64,
    /// The event time of the interval's reading.
    pub ts_ms: i64,
    /// The registry's customer and region of the meter at `ts_ms`.
    pub customer_id: u64,
    pub region: Region,
    /// `None`: approved as read.
    pub value: Option<f64>,
}

/// What an audit entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditAction {
    Edit,
    Approve,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Edit => "edit",
            AuditAction::Approve => "approve",
        }
    }

    fn of_value(value: Option<f64>) -> Self {
        if value.is_some() { AuditAction::Edit } else { AuditAction::Approve }
    }
}

/// One change of an interval, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub utility: Utility,
    pub meter_id: u64,
    pub ts_ms: i64,
    pub changed_at_ms: i64,
    pub action: AuditAction,
    /// The value in force before: an earlier edit's, or the reading's when
    /// the results hold it (a suspect reading); `None`: as read.
    pub old_value: Option<f64>,
    /// `None` for an approval.
    pub new_value: Option<f64>,
    pub reason: String,
    pub changed_by: String,
}

type EditRow = (String, i64, i64, i64, String, Option<f64>);
type AuditRow = (String, i64, i64, i64, String, Option<f64>, Option<f64>, String, String);

impl Database {
    /// Puts `edits` in force and logs each, in one transaction; returns the
    /// audit entries written. An entry is dated `changed_at_ms`, or 1 ms
    /// after the interval's newest entry when that is not earlier, so that
    /// each interval's log is strictly ordered.
    #[tracing::instrument(level = "info", skip(self, edits, reason), fields(edits = edits.len()))]
    pub async fn record_interval_edits(
        &self,
        edits: &[IntervalEdit],
        reason: &str,
        changed_by: &str,
        changed_at_ms: i64,
    ) -> Result<Vec<AuditEntry>, ResultsError> {
        let key = format!("utility = {} AND meter_id = {} AND ts_ms = {}", self.placeholder(1), self.placeholder(2), self.placeholder(3));
        let in_force_sql = format!("SELECT edited_value FROM interval_edits WHERE {key}");
        let as_read_sql = format!("SELECT reading_value FROM suspect_intervals WHERE {key}");
        let newest_sql = format!("SELECT MAX(changed_at_ms) FROM interval_audit WHERE {key}");
        let delete_sql = format!("DELETE FROM interval_edits WHERE {key}");
        let insert_edit_sql = self.insert_sql(
            "interval_edits",
            &["utility", "meter_id", "ts_ms", "customer_id", "region", "edited_value", "reason", "edited_by", "edited_at_ms"],
            1,
        );
        let insert_audit_sql = self.insert_sql(
            "interval_audit",
            &["utility", "meter_id", "ts_ms", "changed_at_ms", "action", "old_value", "new_value", "reason", "changed_by"],
            1,
        );
        let mut transaction = self.begin_write().await.map_err(query_error("starting a transaction"))?;
        let mut entries = Vec::with_capacity(edits.len());
        for edit in edits {
            let (utility, meter_id) = (edit.utility.as_str(), edit.meter_id as i64);
            let in_force: Option<(Option<f64>,)> = sqlx::query_as(&in_force_sql)
                .bind(utility)
                .bind(meter_id)
                .bind(edit.ts_ms)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(query_error("interval_edits"))?;
            let old_value = match in_force.and_then(|(value,)| value) {
                Some(value) => Some(value),
                None => sqlx::query_as::<_, (f64,)>(&as_read_sql)
                    .bind(utility)
                    .bind(meter_id)
                    .bind(edit.ts_ms)
                    .fetch_optional(&mut *transaction)
                    .await
                    .map_err(query_error("suspect_intervals"))?
                    .map(|(value,)| value),
            };
            let (newest,): (Option<i64>,) = sqlx::query_as(&newest_sql)
                .bind(utility)
                .bind(meter_id)
                .bind(edit.ts_ms)
                .fetch_one(&mut *transaction)
                .await
                .map_err(query_error("interval_audit"))?;
            let changed_at_ms = newest.map_or(changed_at_ms, |newest| changed_at_ms.max(newest.saturating_add(1)));
            sqlx::query(&delete_sql)
                .bind(utility)
                .bind(meter_id)
                .bind(edit.ts_ms)
                .execute(&mut *transaction)
                .await
                .map_err(query_error("interval_edits"))?;
            binding_optional_floats(sqlx::query(&insert_edit_sql))
                .bind(utility)
                .bind(meter_id)
                .bind(edit.ts_ms)
                .bind(edit.customer_id as i64)
                .bind(edit.region.code())
                .bind(edit.value)
                .bind(reason)
                .bind(changed_by)
                .bind(changed_at_ms)
                .execute(&mut *transaction)
                .await
                .map_err(query_error("interval_edits"))?;
            let action = AuditAction::of_value(edit.value);
            binding_optional_floats(sqlx::query(&insert_audit_sql))
                .bind(utility)
                .bind(meter_id)
                .bind(edit.ts_ms)
                .bind(changed_at_ms)
                .bind(action.as_str())
                .bind(old_value)
                .bind(edit.value)
                .bind(reason)
                .bind(changed_by)
                .execute(&mut *transaction)
                .await
                .map_err(query_error("interval_audit"))?;
            entries.push(AuditEntry {
                utility: edit.utility,
                meter_id: edit.meter_id,
                ts_ms: edit.ts_ms,
                changed_at_ms,
                action,
                old_value,
                new_value: edit.value,
                reason: reason.to_owned(),
                changed_by: changed_by.to_owned(),
            });
        }
        transaction.commit().await.map_err(query_error("committing the edits"))?;
        Ok(entries)
    }

    /// The edits in force on intervals from `from_ms` to `to_ms` (exclusive)
    /// of `utilities`, ordered by utility, customer, meter and time.
    pub async fn edits_during(&self, from_ms: i64, to_ms: i64, utilities: &[Utility]) -> Result<Vec<IntervalEdit>, ResultsError> {
        let sql = format!(
            "SELECT utility, meter_id, ts_ms, customer_id, region, edited_value FROM interval_edits \
             WHERE ts_ms >= {} AND ts_ms < {} ORDER BY utility, customer_id, meter_id, ts_ms",
            self.placeholder(1),
            self.placeholder(2)
        );
        let rows: Vec<EditRow> =
            sqlx::query_as(&sql).bind(from_ms).bind(to_ms).fetch_all(self.pool()).await.map_err(query_error("interval_edits"))?;
        let mut edits = Vec::with_capacity(rows.len());
        for (utility, meter_id, ts_ms, customer_id, region, value) in rows {
            let utility = parse_utility(&utility)?;
            if utilities.contains(&utility) {
                let (meter_id, customer_id, region) = (meter_id as u64, customer_id as u64, parse_region(&region)?);
                edits.push(IntervalEdit { utility, meter_id, ts_ms, customer_id, region, value });
            }
        }
        Ok(edits)
    }

    /// The event times of a meter's readings the batch flagged suspect on
    /// `date`, with their utility, oldest first.
    pub async fn suspect_times(&self, meter_id: u64, date: NaiveDate) -> Result<Vec<(Utility, i64)>, ResultsError> {
        let sql = format!(
            "SELECT utility, ts_ms FROM suspect_intervals WHERE meter_id = {} AND usage_date = {} ORDER BY ts_ms, utility",
            self.placeholder(1),
            self.placeholder(2)
        );
        let rows: Vec<(String, i64)> = sqlx::query_as(&sql)
            .bind(meter_id as i64)
            .bind(date.format("%Y-%m-%d").to_string())
            .fetch_all(self.pool())
            .await
            .map_err(query_error("suspect_intervals"))?;
        rows.into_iter().map(|(utility, ts_ms)| Ok((parse_utility(&utility)?, ts_ms))).collect()
    }

    /// A meter's audit log, newest change first, at most `limit` entries.
    pub async fn audit_log(&self, meter_id: u64, limit: u32) -> Result<Vec<AuditEntry>, ResultsError> {
        let sql = format!(
            "SELECT utility, meter_id, ts_ms, changed_at_ms, action, old_value, new_value, reason, changed_by \
             FROM interval_audit WHERE meter_id = {} ORDER BY changed_at_ms DESC, utility, ts_ms LIMIT {limit}",
            self.placeholder(1)
        );
        let rows: Vec<AuditRow> =
            sqlx::query_as(&sql).bind(meter_id as i64).fetch_all(self.pool()).await.map_err(query_error("interval_audit"))?;
        rows.into_iter()
            .map(|(utility, meter_id, ts_ms, changed_at_ms, action, old_value, new_value, reason, changed_by)| {
                let action = match action.as_str() {
                    "edit" => AuditAction::Edit,
                    "approve" => AuditAction::Approve,
                    other => return Err(ResultsError::Stored(format!("an audit entry of unknown action {other:?}"))),
                };
                Ok(AuditEntry {
                    utility: parse_utility(&utility)?,
                    meter_id: meter_id as u64,
                    ts_ms,
                    changed_at_ms,
                    action,
                    old_value,
                    new_value,
                    reason,
                    changed_by,
                })
            })
            .collect()
    }
}
