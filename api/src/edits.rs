//! Operators edit and approve a meter's intervals, with an audit log
//! ([`auth_results::edits`]). An edit sets an interval's value; an approval
//! keeps it as read and clears its `suspect` flag. Both take effect at the
//! batch's next run of the interval's day (the scheduled batch recomputes the
//! last week; `auth batch --date` any day), and every later run keeps them.

use std::collections::BTreeSet;

use auth_core::registry::Installation;
use auth_results::{AuditEntry, IntervalEdit};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::session::Caller;
use crate::{ApiError, AppState, now_ms};

/// The most intervals one request changes: a day of one-minute intervals.
const MAX_INTERVALS: usize = 1_440;
/// The longest reason, in characters.
const MAX_REASON_CHARS: usize = 500;
const MAX_AUDIT_LIMIT: u32 = 1_000;
const DEFAULT_AUDIT_LIMIT: u32 = 100;

/// New values for some of a meter's intervals.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditRequest {
    /// Each interval by its reading's event time (UTC ms) and its new value,
    /// in the unit of the meter's readings; an interval without a reading
    /// gets one.
    pub intervals: Vec<IntervalValue>,
    /// Why (kept in the audit log).
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntervalValue {
    pub ts_ms: i64,
    pub value: f64,
}

/// Intervals to approve as read: those named, or every suspect one of a day.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalRequest {
    /// Event times (UTC ms) of the meter's readings.
    #[serde(default)]
    pub intervals: Vec<i64>,
    /// `YYYY-MM-DD`: every reading of the meter the batch flagged suspect that day.
    pub date: Option<String>,
    pub reason: String,
}

/// What a request changed, and the days whose results change with it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changed {
    pub meter_id: u64,
    /// The batch's next run of each of these days applies the change.
    pub days: Vec<String>,
    /// The audit entries written (`action`, `oldValue`, `newValue`, `reason`, `changedBy`, `changedAtMs`).
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<AuditEntry>,
}

/// A meter's audit log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditLog {
    pub meter_id: u64,
    /// Newest change first.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<AuditEntry>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// At most this many entries, the newest first (1 to 1000, default 100).
    limit: Option<u32>,
}

fn parse_meter(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("meter id `{text}` is not a non-negative integer")))
}

fn checked_reason(reason: &str) -> Result<&str, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError::bad_request("reason: say why (it is kept in the audit log)"));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::bad_request(format!("reason: at most {MAX_REASON_CHARS} characters")));
    }
    Ok(reason)
}

/// The installation of the meter at each of `times` (each named once), as
/// edits of `values` (`None`: approvals); 400 naming the first time that
/// is repeated or at which the meter was not installed.
fn edits_of(meter_id: u64, installations: &[Installation], changes: &[(i64, Option<f64>)]) -> Result<Vec<IntervalEdit>, ApiError> {
    if changes.is_empty() {
        return Err(ApiError::bad_request("intervals: name at least one"));
    }
    if changes.len() > MAX_INTERVALS {
        return Err(ApiError::bad_request(format!("intervals: at most {MAX_INTERVALS} in one request")));
    }
    let mut seen = BTreeSet::new();
    changes
        .iter()
        .map(|&(ts_ms, value)| {
            if !seen.insert(ts_ms) {
                return Err(ApiError::bad_request(format!("interval {ts_ms} is named twice")));
            }
            let installation = installations.iter().find(|installation| installation.covers(ts_ms)).ok_or_else(|| {
                ApiError::bad_request(format!("meter {meter_id} was not installed at {ts_ms} (UTC ms)"))
            })?;
            if let Some(value) = value {
                let max = installation.utility.max_reading_value();
                if !value.is_finite() || !(0.0..=max).contains(&value) {
                    return Err(ApiError::bad_request(format!(
                        "interval {ts_ms}: value {value:e} is not between 0 and {max:e}, the plausible bound of {}",
                        installation.utility
                    )));
                }
            }
            Ok(IntervalEdit {
                utility: installation.utility,
                meter_id,
                ts_ms,
                customer_id: installation.customer_id,
                region: installation.region,
                value,
            })
        })
        .collect()
}

async fn installations(state: &AppState, meter_id: u64) -> Result<Vec<Installation>, ApiError> {
    let installations = state.sessions.database().meter_installations(meter_id).await.map_err(ApiError::results)?;
    if installations.is_empty() {
        return Err(ApiError::not_found(format!("meter {meter_id} is not in the registry")));
    }
    Ok(installations)
}

async fn record(state: &AppState, caller: &Caller, meter_id: u64, edits: Vec<IntervalEdit>, reason: &str) -> Result<Changed, ApiError> {
    let by = &caller.0.username;
    let entries =
        state.sessions.database().record_interval_edits(&edits, reason, by, now_ms()).await.map_err(ApiError::results)?;
    let days: BTreeSet<String> = edits
        .iter()
        .filter_map(|edit| chrono::DateTime::from_timestamp_millis(edit.ts_ms))
        .map(|at| at.date_naive().format("%Y-%m-%d").to_string())
        .collect();
    tracing::info!(meter_id, by = %by, intervals = edits.len(), "intervals edited or approved");
    Ok(Changed { meter_id, days: days.into_iter().collect(), entries })
}

fn body_of<'a, T: Deserialize<'a>>(body: &'a Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::bad_request(format!("body: {err}")))
}

#[utoipa::path(post, path = "/api/v1/meters/{id}/edits", tag = "quality",
    params(("id" = u64, Path, description = "meter id")), request_body = EditRequest,
    responses((status = 200, body = Changed), (status = 400, description = "a bad interval, value or reason, named"),
              (status = 401, description = "not logged in"), (status = 403, description = "operators only"),
              (status = 404, description = "not in the registry")))]
pub(crate) async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Changed>, ApiError> {
    caller.must_be_operator()?;
    let meter_id = parse_meter(&id)?;
    let request: EditRequest = body_of(&body)?;
    let reason = checked_reason(&request.reason)?;
    let changes: Vec<(i64, Option<f64>)> = request.intervals.iter().map(|interval| (interval.ts_ms, Some(interval.value))).collect();
    let edits = edits_of(meter_id, &installations(&state, meter_id).await?, &changes)?;
    Ok(Json(record(&state, &caller, meter_id, edits, reason).await?))
}

#[utoipa::path(post, path = "/api/v1/meters/{id}/approvals", tag = "quality",
    params(("id" = u64, Path, description = "meter id")), request_body = ApprovalRequest,
    responses((status = 200, body = Changed), (status = 400, description = "a bad interval, date or reason, named"),
              (status = 401, description = "not logged in"), (status = 403, description = "operators only"),
              (status = 404, description = "not in the registry")))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Changed>, ApiError> {
    caller.must_be_operator()?;
    let meter_id = parse_meter(&id)?;
    let request: ApprovalRequest = body_of(&body)?;
    let reason = checked_reason(&request.reason)?;
    let mut times = request.intervals;
    if let Some(text) = request.date.as_deref() {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| ApiError::bad_request(format!("date `{text}` is not YYYY-MM-DD")))?;
        let suspect = state.sessions.database().suspect_times(meter_id, date).await.map_err(ApiError::results)?;
        if suspect.is_empty() && times.is_empty() {
            return Err(ApiError::bad_request(format!("meter {meter_id} has no reading flagged suspect on {text}")));
        }
        times.extend(suspect.into_iter().map(|(_, ts_ms)| ts_ms).filter(|ts_ms| !times.contains(ts_ms)).collect::<Vec<_>>());
    }
    let changes: Vec<(i64, Option<f64>)> = times.into_iter().map(|ts_ms| (ts_ms, None)).collect();
    let edits = edits_of(meter_id, &installations(&state, meter_id).await?, &changes)?;
    Ok(Json(record(&state, &caller, meter_id, edits, reason).await?))
}

#[utoipa::path(get, path = "/api/v1/meters/{id}/audit", tag = "quality",
    params(("id" = u64, Path, description = "meter id"), AuditQuery),
    responses((status = 200, body = AuditLog), (status = 400, description = "a bad meter id or limit"),
              (status = 401, description = "not logged in"), (status = 403, description = "operators only")))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditLog>, ApiError> {
    caller.must_be_operator()?;
    let meter_id = parse_meter(&id)?;
    let limit = crate::routes::query_of(query)?.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit {limit} must be 1 to {MAX_AUDIT_LIMIT}")));
    }
    let entries = state.sessions.database().audit_log(meter_id, limit).await.map_err(ApiError::results)?;
    Ok(Json(AuditLog { meter_id, entries }))
}
