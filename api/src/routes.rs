//! The `/api/v1` handlers over the serving layer.

use std::collections::BTreeMap;

use auth_core::ports::StoredWindow;
use auth_core::local_day;
use auth_core::{Region, Utility};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::session::Caller;
use crate::usage::{
    DAY_MS, Granularity, HOUR_MS, Point, SeriesDays, Source, customer_series, customer_utc_days, date_of, day_start_ms, hours_kept_since_ms, region_series,
    region_utc_days,
};
use crate::{ApiError, AppState, now_ms};

/// Points a series may hold; a longer range is refused.
pub const MAX_POINTS: i64 = 10_000;

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// The process's metrics, and the batch's last run from the results database:
/// the batch itself is a short-lived job that nothing scrapes.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let refreshed = state
        .batch_gauges
        .try_get_with((), async {
            let run = state.sessions.database().last_batch_run().await?;
            if let Some(run) = run {
                metrics::gauge!(crate::METRIC_BATCH_LAST_SUCCESS).set(run.finished_at_ms as f64 / 1_000.0);
                metrics::gauge!(crate::METRIC_BATCH_DURATION).set(run.duration_ms as f64 / 1_000.0);
            }
            Ok::<(), auth_results::ResultsError>(())
        })
        .await;
    if let Err(err) = refreshed {
        tracing::warn!(error = %err, "reading the batch's last run for /metrics");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// A series' parameters: every one optional.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// `electricity`, `gas` or `water`; all of them when absent.
    utility: Option<String>,
    /// `minute`, `hour` or `day` (regions: `hour` or `day`). Default: `day`.
    granularity: Option<String>,
    /// Start, inclusive: RFC 3339 (`2026-11-27T00:00:00Z`), a date (`2026-11-27`) or UTC ms.
    /// Default: 30 days (day), 48 hours (hour) or 60 minutes (minute) before `to`.
    from: Option<String>,
    /// End, exclusive, in the same forms. Default: the end of the current window.
    to: Option<String>,
    /// Whose days the day points are: `local` (default), the local days of
    /// the customer's or region's time zone; or `UTC`, UTC days. Minutes and
    /// hours are the same instants either way.
    #[serde(rename = "timeZone")]
    time_zone: Option<String>,
}

/// A point in time from a query parameter.
fn parse_instant(name: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.timestamp_millis());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day_start_ms(date));
    }
    Err(ApiError::bad_request(format!("{name}: {text:?} is not an RFC 3339 time, a YYYY-MM-DD date or UTC milliseconds")))
}

pub(crate) fn parse_utility(text: &str) -> Result<Utility, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("utility: {text:?} is not one of electricity, gas, water")))
}

fn parse_customer(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("customer id `{text}` is not a non-negative integer")))
}

fn parse_region(text: &str) -> Result<Region, ApiError> {
    Region::from_code(text).ok_or_else(|| ApiError::not_found(format!("no region {text:?} (ISO 3166-2 codes such as US-CA)")))
}

pub(crate) fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(query)| query).map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

/// The parameters of a series, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SeriesRange {
    utilities: Vec<Utility>,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
    /// UTC days instead of local days.
    utc_days: bool,
}

impl SeriesQuery {
    fn check(&self, allowed: &[Granularity], now_ms: i64) -> Result<SeriesRange, ApiError> {
        let utilities = match &self.utility {
            Some(text) => vec![parse_utility(text)?],
            None => Utility::ALL.to_vec(),
        };
        let granularity = match self.granularity.as_deref() {
            None => Granularity::Day,
            Some(text) => allowed.iter().copied().find(|g| g.as_str() == text).ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|g| g.as_str()).collect();
                ApiError::bad_request(format!("granularity: {text:?} is not one of {}", names.join(", ")))
            })?,
        };
        let width = granularity.width_ms();
        let to_ms = match &self.to {
            Some(text) => parse_instant("to", text)?,
            None => (now_ms.div_euclid(width) + 1) * width,
        };
        let default_points = match granularity {
            Granularity::Minute => 60,
            Granularity::Hour => 48,
            Granularity::Day => 30,
        };
        let from_ms = match &self.from {
            Some(text) => parse_instant("from", text)?,
            None => to_ms - default_points * width,
        };
        if from_ms >= to_ms {
            return Err(ApiError::bad_request("from: must be before to"));
        }
        if (to_ms - from_ms) / width > MAX_POINTS {
            return Err(ApiError::bad_request(format!(
                "from, to: at most {MAX_POINTS} points of a {}; ask for a coarser granularity",
                granularity.as_str()
            )));
        }
        let utc_days = match self.time_zone.as_deref() {
            None => false,
            Some(text) if text.eq_ignore_ascii_case("local") => false,
            Some(text) if text.eq_ignore_ascii_case("UTC") => true,
            Some(text) => return Err(ApiError::bad_request(format!("timeZone: {text:?} is not `local` or `UTC`"))),
        };
        Ok(SeriesRange { utilities, granularity, from_ms, to_ms, utc_days })
    }
}

/// One utility's series.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UtilitySeries {
    /// `electricity`, `gas` or `water`.
    utility: String,
    /// `Wh` or `L`.
    unit: String,
    points: Vec<Point>,
}

fn series(utility: Utility, points: Vec<Point>) -> UtilitySeries {
    UtilitySeries { utility: utility.as_str().into(), unit: utility.unit().into(), points }
}

/// A customer's usage over a range.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerUsage {
    customer_id: u64,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
    /// The IANA zone whose local days the day points are (the region's of
    /// the customer's meters), e.g. `America/Los_Angeles`; `UTC` when asked
    /// for UTC days, and for a customer the registry does not know.
    time_zone: &'static str,
    /// The utilities the customer has usage of in the range (or the one asked for).
    utilities: Vec<UtilitySeries>,
}

/// The dates any local day overlapping `[from_ms, to_ms)` can have, first
/// and last: a local date is at most a day off the UTC one.
fn date_span(from_ms: i64, to_ms: i64) -> (NaiveDate, NaiveDate) {
    let (first, last) = (date_of(from_ms), date_of(to_ms - 1));
    (first.pred_opt().unwrap_or(first), last.succ_opt().unwrap_or(last))
}

/// Whose days a customer's series count: the local days of the region of
/// its newest installation; UTC days when the registry does not know it.
async fn customer_days(state: &AppState, customer_id: u64) -> Result<SeriesDays, ApiError> {
    let installations = state.sessions.database().customer_installations(customer_id).await.map_err(ApiError::results)?;
    Ok(installations.iter().max_by_key(|installation| installation.valid_from_ms).map_or(SeriesDays::Utc, |newest| SeriesDays::Local(newest.region)))
}

/// A JSON response whose buffer is sized up front: a series is many small
/// points, and `Json` would grow its buffer from 128 bytes, copying it each time.
pub(crate) struct SizedJson<T> {
    value: T,
    capacity: usize,
}

impl<T: Serialize> IntoResponse for SizedJson<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(self.capacity);
        match serde_json::to_writer(&mut body, &self.value) {
            Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(err) => ApiError::internal("rendering JSON", &err).into_response(),
        }
    }
}

/// A customer's usage by utility, range and granularity: closed days from the
/// batch, everything newer (and every minute and hour) from the stream.
#[utoipa::path(get, path = "/api/v1/customers/{id}/usage", tag = "customers",
    params(("id" = u64, Path, description = "customer id"), SeriesQuery),
    responses((status = 200, body = CustomerUsage), (status = 400, description = "bad parameter, with the reason"),
              (status = 401, description = "not logged in"), (status = 403, description = "another customer's usage"),
              (status = 404, description = "no usage recorded for the customer")))]
pub(crate) async fn customer_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<SizedJson<CustomerUsage>, ApiError> {
    let customer_id = parse_customer(&id)?;
    caller.may_see_customer(customer_id)?;
    let now = now_ms();
    let range = query_of(query)?.check(&[Granularity::Minute, Granularity::Hour, Granularity::Day], now)?;
    let days = customer_days(&state, customer_id).await?;
    let windows = state.store.customer_windows(customer_id).await?;
    let (first_day, last_day) = date_span(range.from_ms, range.to_ms);
    let mut utilities = Vec::new();
    for &utility in &range.utilities {
        let own: Vec<StoredWindow> = windows.iter().filter(|window| window.utility == utility).copied().collect();
        let (batch_days, batch_rows) = if range.granularity == Granularity::Day {
            let db = state.sessions.database();
            let days = db.batch_days(utility, first_day, last_day, state.batch_settle_ms).await.map_err(ApiError::results)?;
            let rows = if days.is_empty() {
                Vec::new()
            } else {
                db.customer_days(customer_id, utility, first_day, last_day).await.map_err(ApiError::results)?
            };
            (days, rows)
        } else {
            (Vec::new(), Vec::new())
        };
        let has_usage = !own.is_empty() || !batch_rows.is_empty();
        if has_usage || range.utilities.len() == 1 {
            let points = match days {
                SeriesDays::Local(region) if range.utc_days && range.granularity == Granularity::Day => {
                    customer_utc_days(region, &own, state.recent_windows, &batch_days, &batch_rows, range.from_ms, range.to_ms, now)
                }
                _ => customer_series(days, &own, &batch_days, &batch_rows, range.granularity, range.from_ms, range.to_ms),
            };
            utilities.push(series(utility, points));
        }
    }
    if utilities.iter().all(|series| series.points.is_empty()) && windows.is_empty() {
        return Err(ApiError::not_found(format!("no usage recorded for customer {customer_id}")));
    }
    let points: usize = utilities.iter().map(|series| series.points.len()).sum();
    let usage = CustomerUsage {
        customer_id,
        granularity: range.granularity,
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        time_zone: if range.utc_days { SeriesDays::Utc.time_zone() } else { days.time_zone() },
        utilities,
    };
    Ok(SizedJson { value: usage, capacity: 256 + 128 * points })
}

/// Today against yesterday for one utility.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayComparison {
    utility: String,
    unit: String,
    /// Today so far (the customer's local day), from the stream.
    today: f64,
    today_readings: u64,
    /// Yesterday's total: the batch's once computed, else the stream's.
    yesterday: Option<f64>,
    yesterday_source: Option<Source>,
    /// Yesterday up to the same time of day, from the stream's hours when it still holds them.
    yesterday_so_far: Option<f64>,
}

/// A customer's today against yesterday.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TodayUsage {
    customer_id: u64,
    /// Start of the customer's local today, UTC ms.
    day_start_ms: i64,
    /// The IANA zone of the customer's days ([`CustomerUsage`]'s).
    time_zone: &'static str,
    utilities: Vec<DayComparison>,
}

/// Today so far against yesterday, per utility.
#[utoipa::path(get, path = "/api/v1/customers/{id}/today", tag = "customers",
    params(("id" = u64, Path, description = "customer id")),
    responses((status = 200, body = TodayUsage), (status = 400, description = "bad customer id"),
              (status = 401, description = "not logged in"), (status = 403, description = "another customer's usage"),
              (status = 404, description = "no usage recorded for the customer")))]
pub(crate) async fn customer_today(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TodayUsage>, ApiError> {
    let customer_id = parse_customer(&id)?;
    caller.may_see_customer(customer_id)?;
    let now = now_ms();
    let days = customer_days(&state, customer_id).await?;
    let today = days.date_of(now);
    let today_start = days.start_ms(today);
    let yesterday = today.pred_opt().unwrap_or(today);
    let yesterday_start = days.start_ms(yesterday);
    let windows = state.store.customer_windows(customer_id).await?;
    if windows.is_empty() {
        return Err(ApiError::not_found(format!("no usage recorded for customer {customer_id}")));
    }
    let mut by_utility: BTreeMap<Utility, Vec<StoredWindow>> = BTreeMap::new();
    for window in windows {
        by_utility.entry(window.utility).or_default().push(window);
    }
    let db = state.sessions.database();
    let mut utilities = Vec::new();
    for (utility, windows) in by_utility {
        let day_window = |start_ms: i64| windows.iter().find(|w| w.slot.width_ms == DAY_MS && w.slot.start_ms == start_ms);
        let today = day_window(today_start);
        let batch_day = db.batch_days(utility, yesterday, yesterday, state.batch_settle_ms).await.map_err(ApiError::results)?;
        let (yesterday_total, yesterday_source) = if batch_day.is_empty() {
            match day_window(yesterday_start) {
                Some(window) => (Some(window.aggregate.sum), Some(Source::Stream)),
                None => (None, None),
            }
        } else {
            let rows = db.customer_days(customer_id, utility, yesterday, yesterday).await.map_err(ApiError::results)?;
            (Some(rows.first().map_or(0.0, |row| row.total)), Some(Source::Batch))
        };
        let elapsed_hours = (now - today_start) / HOUR_MS;
        let yesterday_hours: Vec<&StoredWindow> = windows
            .iter()
            .filter(|w| w.slot.width_ms == HOUR_MS && w.slot.start_ms >= yesterday_start && w.slot.start_ms < today_start)
            .collect();
        // Yesterday had 23 to 25 hours.
        let yesterday_so_far = (yesterday_hours.len() as i64 >= (today_start - yesterday_start) / HOUR_MS).then(|| {
            yesterday_hours
                .iter()
                .filter(|w| w.slot.start_ms < yesterday_start + elapsed_hours * HOUR_MS)
                .map(|w| w.aggregate.sum)
                .sum()
        });
        utilities.push(DayComparison {
            utility: utility.as_str().into(),
            unit: utility.unit().into(),
            today: today.map_or(0.0, |w| w.aggregate.sum),
            today_readings: today.map_or(0, |w| w.aggregate.count),
            yesterday: yesterday_total,
            yesterday_source,
            yesterday_so_far,
        });
    }
    Ok(Json(TodayUsage { customer_id, day_start_ms: today_start, time_zone: days.time_zone(), utilities }))
}

/// A region's totals of one utility on the newest day.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionUtilityTotal {
    utility: String,
    unit: String,
    sum: f64,
    count: u64,
    /// Sum per resident.
    per_capita: f64,
}

/// A region and its newest day's totals.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionUsage {
    /// ISO 3166-2 code.
    code: String,
    name: String,
    population: u32,
    /// Start of the newest day with readings (the region's local day), UTC ms.
    day_start_ms: Option<i64>,
    /// The IANA zone of the region's days, e.g. `America/Chicago`.
    time_zone: &'static str,
    utilities: Vec<RegionUtilityTotal>,
}

/// Every region with its newest day's totals per utility (the stream's day windows).
pub(crate) async fn region_overview(state: &AppState) -> Result<Vec<RegionUsage>, ApiError> {
    let days = state.store.region_windows(DAY_MS, 0).await?;
    // The newest local date any region has readings of; each region's day of that date starts at its own midnight.
    let newest_date = days.iter().map(|window| local_day::date_of(window.region, window.window.slot.start_ms)).max();
    let mut rows: Vec<RegionUsage> = Region::all()
        .map(|region| {
            let row = region.info();
            RegionUsage {
                code: row.code.into(),
                name: row.name.into(),
                population: row.population,
                day_start_ms: newest_date.map(|date| local_day::day_start_ms(region, date)),
                time_zone: row.time_zone.name(),
                utilities: Vec::new(),
            }
        })
        .collect();
    for window in &days {
        if rows[window.region.index()].day_start_ms != Some(window.window.slot.start_ms) {
            continue;
        }
        let utility = window.window.utility;
        rows[window.region.index()].utilities.push(RegionUtilityTotal {
            utility: utility.as_str().into(),
            unit: utility.unit().into(),
            sum: window.window.aggregate.sum,
            count: window.window.aggregate.count,
            per_capita: window.window.aggregate.sum / f64::from(window.region.info().population),
        });
    }
    Ok(rows)
}

/// Every region with today's totals and usage per capita.
#[utoipa::path(get, path = "/api/v1/regions", tag = "regions",
    responses((status = 200, body = [RegionUsage]), (status = 401, description = "not logged in")))]
pub(crate) async fn regions(State(state): State<AppState>, _caller: Caller) -> Result<Json<Vec<RegionUsage>>, ApiError> {
    Ok(Json(region_overview(&state).await?))
}

/// A region's usage over a range.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionSeries {
    code: String,
    name: String,
    population: u32,
    /// The IANA zone of the region's days: a day point starts at its local
    /// midnight, and an hour point of the batch is an hour of its local day;
    /// `UTC` when asked for UTC days.
    time_zone: &'static str,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
    utilities: Vec<UtilitySeries>,
}

/// A region's usage by utility, range and granularity (hour or day): the
/// batch's hours on the days it computed, the stream's windows after.
#[utoipa::path(get, path = "/api/v1/regions/{code}/usage", tag = "regions",
    params(("code" = String, Path, description = "ISO 3166-2 code, e.g. US-CA"), SeriesQuery),
    responses((status = 200, body = RegionSeries), (status = 400, description = "bad parameter, with the reason"),
              (status = 401, description = "not logged in"), (status = 404, description = "no such region")))]
pub(crate) async fn region_usage(
    State(state): State<AppState>,
    _caller: Caller,
    Path(code): Path<String>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<RegionSeries>, ApiError> {
    let region = parse_region(&code)?;
    let now = now_ms();
    let range = query_of(query)?.check(&[Granularity::Hour, Granularity::Day], now)?;
    let utc_days = range.utc_days && range.granularity == Granularity::Day;
    // UTC days sum hours; every kept hour, to know from when they are complete.
    let (width_ms, since_ms) = if utc_days { (HOUR_MS, i64::MIN) } else { (range.granularity.width_ms(), range.from_ms) };
    let every_region = state.store.region_windows(width_ms, since_ms).await?;
    let windows: Vec<StoredWindow> = every_region.iter().filter(|window| window.region == region).map(|window| window.window).collect();
    let (first_day, last_day) = date_span(range.from_ms, range.to_ms);
    let db = state.sessions.database();
    let mut utilities = Vec::new();
    for &utility in &range.utilities {
        let own: Vec<StoredWindow> = windows.iter().filter(|window| window.utility == utility).copied().collect();
        let batch_days = db.batch_days(utility, first_day, last_day, state.batch_settle_ms).await.map_err(ApiError::results)?;
        let batch_hours = if batch_days.is_empty() {
            Vec::new()
        } else {
            db.region_hours(region, utility, first_day, last_day).await.map_err(ApiError::results)?
        };
        let points = if utc_days {
            let starts = every_region.iter().filter(|window| window.window.utility == utility).map(|window| window.window.slot.start_ms);
            let kept_since_ms = hours_kept_since_ms(starts, state.recent_windows);
            region_utc_days(region, &own, kept_since_ms, &batch_days, &batch_hours, range.from_ms, range.to_ms, now)
        } else {
            region_series(region, &own, &batch_days, &batch_hours, range.granularity, range.from_ms, range.to_ms)
        };
        utilities.push(series(utility, points));
    }
    let info = region.info();
    Ok(Json(RegionSeries {
        code: info.code.into(),
        name: info.name.into(),
        population: info.population,
        time_zone: if range.utc_days { SeriesDays::Utc.time_zone() } else { info.time_zone.name() },
        granularity: range.granularity,
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        utilities,
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// `electricity` (default), `gas` or `water`.
    utility: Option<String>,
    /// A day the batch computed (`YYYY-MM-DD`); default: the newest.
    date: Option<String>,
}

/// The top consumers of a region on a day.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopConsumers {
    code: String,
    utility: String,
    unit: String,
    /// `YYYY-MM-DD`.
    date: String,
    customers: Vec<TopCustomer>,
}

/// One of a region's top consumers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopCustomer {
    /// 1 for the largest.
    position: u32,
    customer_id: u64,
    total: f64,
}

/// A region's top consumers on a day the batch computed (operators only).
#[utoipa::path(get, path = "/api/v1/regions/{code}/top", tag = "regions",
    params(("code" = String, Path, description = "ISO 3166-2 code"), TopQuery),
    responses((status = 200, body = TopConsumers), (status = 400, description = "bad parameter"),
              (status = 401, description = "not logged in"), (status = 403, description = "not an operator"),
              (status = 404, description = "no such region, or no day computed yet")))]
pub(crate) async fn region_top(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    query: Result<Query<TopQuery>, QueryRejection>,
) -> Result<Json<TopConsumers>, ApiError> {
    caller.must_be_operator()?;
    let region = parse_region(&code)?;
    let query = query_of(query)?;
    let utility = query.utility.as_deref().map_or(Ok(Utility::Electricity), parse_utility)?;
    let db = state.sessions.database();
    let date = match &query.date {
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| ApiError::bad_request(format!("date: {text:?} is not a YYYY-MM-DD date")))?,
        None => db
            .newest_batch_day(utility, state.batch_settle_ms)
            .await
            .map_err(ApiError::results)?
            .ok_or_else(|| ApiError::not_found("the batch has not computed a day yet"))?,
    };
    let customers = db
        .top_customers(region, utility, date)
        .await
        .map_err(ApiError::results)?
        .into_iter()
        .map(|row| TopCustomer { position: row.position, customer_id: row.customer_id, total: row.total })
        .collect();
    Ok(Json(TopConsumers {
        code: region.code().into(),
        utility: utility.as_str().into(),
        unit: utility.unit().into(),
        date: date.format("%Y-%m-%d").to_string(),
        customers,
    }))
}
