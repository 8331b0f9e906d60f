//! Data quality for operators: the meters that missed intervals of a day,
//! as the batch measured them against the meter registry, those whose
//! readings its validation rules flagged suspect, one meter's day interval
//! by interval, and the meters the stream has not heard from for a while.

use std::collections::HashMap;

use auth_core::{Region, Utility};
use auth_results::InstalledPeriod;
use auth_results::history::{MeterDayRow, MeterGapRow, SuspectMeterRow};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::session::Caller;
use crate::{ApiError, AppState, now_ms};

/// The most meters one answer lists.
const MAX_LIMIT: u32 = 1_000;
const DEFAULT_LIMIT: u32 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct QualityQuery {
    /// `YYYY-MM-DD`; the newest day the batch computed after it settled when absent.
    date: Option<String>,
    /// electricity, gas or water; every utility when absent.
    utility: Option<String>,
    /// At most this many meters, the worst first (1 to 1000, default 100).
    limit: Option<u32>,
}

/// A quality query's day (`None`: the batch computed none yet), utility and limit.
struct Asked {
    date: Option<NaiveDate>,
    utility: Option<Utility>,
    limit: u32,
}

impl QualityQuery {
    async fn resolve(self, state: &AppState) -> Result<Asked, ApiError> {
        let utility = self.utility.as_deref().map(crate::routes::parse_utility).transpose()?;
        let limit = meters_limit(self.limit)?;
        let date = asked_date(state, self.date.as_deref()).await?;
        Ok(Asked { date, utility, limit })
    }
}

/// How many meters a quality answer lists: `limit`, 1 to [`MAX_LIMIT`], or [`DEFAULT_LIMIT`].
fn meters_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit {limit} must be 1 to {MAX_LIMIT}")));
    }
    Ok(limit)
}

/// The day `text` names (`YYYY-MM-DD`), or when absent the newest the batch
/// computed after it settled (`None`: none yet).
async fn asked_date(state: &AppState, text: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    if let Some(text) = text {
        return NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("date `{text}` is not YYYY-MM-DD")));
    }
    let database = state.sessions.database();
    let mut newest = None;
    for utility in Utility::ALL {
        newest = newest.max(database.newest_batch_day(utility, state.batch_settle_ms).await.map_err(ApiError::results)?);
    }
    Ok(newest)
}

/// The meters with gaps on one day.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterGaps {
    /// The day; `None` when the batch has computed none yet.
    pub date: Option<String>,
    /// Most missing intervals first; each with expected, received and missing
    /// intervals, completeness, how many of the missing the batch estimated
    /// and its last reading of the day (UTC ms, null: it sent nothing).
    #[schema(value_type = Vec<Object>)]
    pub meters: Vec<MeterGapRow>,
}

#[utoipa::path(get, path = "/api/v1/quality/gaps", tag = "quality", params(QualityQuery),
    responses((status = 200, body = MeterGaps), (status = 400, description = "a bad date, utility or limit"),
              (status = 401, description = "not logged in"), (status = 403, description = "operators only")))]
pub(crate) async fn gaps(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<QualityQuery>, QueryRejection>,
) -> Result<Json<MeterGaps>, ApiError> {
    caller.must_be_operator()?;
    let asked = crate::routes::query_of(query)?.resolve(&state).await?;
    let Some(date) = asked.date else { return Ok(Json(MeterGaps { date: None, meters: Vec::new() })) };
    let meters = state.sessions.database().meter_gaps(date, asked.utility, asked.limit).await.map_err(ApiError::results)?;
    Ok(Json(MeterGaps { date: Some(date.format("%Y-%m-%d").to_string()), meters }))
}

/// The meters with readings flagged suspect on one day.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuspectMeters {
    /// The day; `None` when the batch has computed none yet.
    pub date: Option<String>,
    /// Most flagged first; each with its flagged readings by rule (`outOfRange`, `spikes`,
    /// `frozen`, and a cumulative meter's `registerEvents`: rollovers, resets
    /// and first registers), the largest flagged value and the first and last flagged
    /// reading (UTC ms). Flagged readings still count in every total.
    #[schema(value_type = Vec<Object>)]
    pub meters: Vec<SuspectMeterRow>,
}

#[utoipa::path(get, path = "/api/v1/quality/suspect", tag = "quality", params(QualityQuery),
    responses((status = 200, body = SuspectMeters), (status = 400, description = "a bad date, utility or limit"),
              (status = 401, description = "not logged in"), (status = 403, description = "operators only")))]
pub(crate) async fn suspect(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<QualityQuery>, QueryRejection>,
) -> Result<Json<SuspectMeters>, ApiError> {
    caller.must_be_operator()?;
    let asked = crate::routes::query_of(query)?.resolve(&state).await?;
    let Some(date) = asked.date else { return Ok(Json(SuspectMeters { date: None, meters: Vec::new() })) };
    let meters = state.sessions.database().suspect_meters(date, asked.utility, asked.limit).await.map_err(ApiError::results)?;
    Ok(Json(SuspectMeters { date: Some(date.format("%Y-%m-%d").to_string()), meters }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SilentQuery {
    /// Silent for at least this many of the meter's own reading intervals (1 to 100000, default 4).
    intervals: Option<u32>,
    /// electricity, gas or water; every utility when absent.
    utility: Option<String>,
    /// At most this many meters, the longest silent first (1 to 1000, default 100).
    limit: Option<u32>,
}

/// The most `intervals` a silent-meter query may ask for.
const MAX_SILENT_INTERVALS: u32 = 100_000;
/// Meters of the stream one silent-meter answer examines at most, the longest silent first.
const MAX_SILENT_SCANNED: usize = 100_000;
/// Meters read from the serving store (and looked up in the registry) at a time.
const SILENT_PAGE: usize = 1_000;

/// The meters the stream has not heard from for `intervals` of their reading intervals.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SilentMeters {
    /// The API's clock when it answered, UTC ms: silence is measured up to it.
    pub now_ms: i64,
    pub intervals: u32,
    /// The longest silent first. Only meters installed now; a meter the
    /// stream never heard from is not here (the batch's gaps list it).
    pub meters: Vec<SilentMeter>,
    /// False when the answer stopped after examining its most meters
    /// (100000) of the stream, the longest silent first: more may be silent.
    pub complete: bool,
}

/// A meter installed now whose newest reading the stream saw is old.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SilentMeter {
    pub meter_id: u64,
    pub customer_id: u64,
    #[schema(value_type = String)]
    pub region: Region,
    #[schema(value_type = String)]
    pub utility: Utility,
    pub interval_secs: u32,
    /// The newest reading's own time, UTC ms.
    pub last_reading_ms: i64,
    /// Whole reading intervals since it.
    pub silent_intervals: i64,
}

/// Meters silent in the stream: each meter's newest reading time, as the
/// stream processors keep it in the serving store, against its reading
/// interval in the registry.
#[utoipa::path(get, path = "/api/v1/quality/silent", tag = "quality", params(SilentQuery),
    responses((status = 200, body = SilentMeters), (status = 400, description = "bad intervals, utility or limit"),
              (status = 401, description = "not logged in"), (status = 403, description = "operators only")))]
pub(crate) async fn silent(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<SilentQuery>, QueryRejection>,
) -> Result<Json<SilentMeters>, ApiError> {
    caller.must_be_operator()?;
    let query = crate::routes::query_of(query)?;
    let utility = query.utility.as_deref().map(crate::routes::parse_utility).transpose()?;
    let limit = meters_limit(query.limit)?;
    let intervals = query.intervals.unwrap_or(4);
    if !(1..=MAX_SILENT_INTERVALS).contains(&intervals) {
        return Err(ApiError::bad_request(format!("intervals {intervals} must be 1 to {MAX_SILENT_INTERVALS}")));
    }
    let now_ms = now_ms();
    // The shortest reading interval is a second: no meter is silent for
    // `intervals` of its own that read after this.
    let before_ms = now_ms - i64::from(intervals) * 1_000;
    let mut meters = Vec::new();
    let mut scanned = 0;
    let complete = loop {
        if scanned >= MAX_SILENT_SCANNED {
            break false;
        }
        let page = state.store.meters_silent_since(before_ms, scanned, SILENT_PAGE).await?;
        scanned += page.len();
        let ids: Vec<u64> = page.iter().map(|meter| meter.meter_id).collect();
        let installed: HashMap<u64, InstalledPeriod> = state
            .sessions
            .database()
            .installed_at(&ids, now_ms)
            .await
            .map_err(ApiError::results)?
            .into_iter()
            .map(|installation| (installation.meter_id, installation))
            .collect();
        for meter in &page {
            let Some(installation) = installed.get(&meter.meter_id) else { continue };
            let silent_intervals = (now_ms - meter.ts_ms) / (i64::from(installation.interval_secs) * 1_000);
            if utility.is_some_and(|utility| utility != installation.utility) || silent_intervals < i64::from(intervals) {
                continue;
            }
            meters.push(SilentMeter {
                meter_id: meter.meter_id,
                customer_id: installation.customer_id,
                region: installation.region,
                utility: installation.utility,
                interval_secs: installation.interval_secs,
                last_reading_ms: meter.ts_ms,
                silent_intervals,
            });
            if meters.len() == limit as usize {
                break;
            }
        }
        if meters.len() == limit as usize || page.len() < SILENT_PAGE {
            break true;
        }
    };
    Ok(Json(SilentMeters { now_ms, intervals, meters, complete }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct MeterDayQuery {
    /// `YYYY-MM-DD`; the newest day the batch computed after it settled when absent.
    date: Option<String>,
}

/// One meter's day, interval by interval, as the batch found it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterDay {
    pub meter_id: u64,
    /// The day; `None` when the batch has computed none yet.
    pub date: Option<String>,
    /// `gaps` (per utility and customer: expected, received and missing
    /// intervals; empty when it read every one), `suspect` (each flagged
    /// reading: `tsMs`, `value`, `rule`) and `edited` (each interval an
    /// operator's edit set: `tsMs`, `readValue`, null where the meter sent
    /// none, and `value`) and `estimated` (each run of consecutive intervals
    /// the meter missed that the batch estimated: `fromMs`, `toMs`,
    /// `intervals`, their `total` and `method`, `interpolated`, `profile` or `register`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub quality: MeterDayRow,
}

#[utoipa::path(get, path = "/api/v1/meters/{id}/quality", tag = "quality",
    params(("id" = u64, Path, description = "meter id"), MeterDayQuery),
    responses((status = 200, body = MeterDay), (status = 400, description = "a bad meter id or date"),
              (status = 401, description = "not logged in"), (status = 403, description = "operators only")))]
pub(crate) async fn meter_day(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<MeterDayQuery>, QueryRejection>,
) -> Result<Json<MeterDay>, ApiError> {
    caller.must_be_operator()?;
    let meter_id: u64 = id.parse().map_err(|_| ApiError::bad_request(format!("meter id `{id}` is not a non-negative integer")))?;
    let query = crate::routes::query_of(query)?;
    let Some(date) = asked_date(&state, query.date.as_deref()).await? else {
        return Ok(Json(MeterDay { meter_id, date: None, quality: MeterDayRow::default() }));
    };
    let quality = state.sessions.database().meter_day(meter_id, date).await.map_err(ApiError::results)?;
    Ok(Json(MeterDay { meter_id, date: Some(date.format("%Y-%m-%d").to_string()), quality }))
}
