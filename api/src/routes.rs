//! Handlers.

use std::collections::BTreeMap;

use auth_core::ports::{Aggregate, StoredWindow};
use auth_core::region::REGIONS;
use auth_core::Utility;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde::Serialize;

use crate::{ApiError, AppState};

const DAY_MS: i64 = 86_400_000;

pub(crate) async fn page() -> Html<&'static str> {
    Html(include_str!("../web/index.html"))
}

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CustomerUsage {
    customer_id: u64,
    utilities: Vec<UtilityUsage>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UtilityUsage {
    utility: Utility,
    unit: &'static str,
    /// The customer's newest one-day window: today's total so far.
    today: Option<StoredWindow>,
    /// The one-day windows before it, oldest first; once the batch has
    /// recomputed a day, its totals are the batch's.
    past_days: Vec<StoredWindow>,
    /// Recent windows of every other size, oldest first.
    windows: Vec<StoredWindow>,
}

pub(crate) async fn customer_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CustomerUsage>, ApiError> {
    let customer_id: u64 =
        id.parse().map_err(|_| ApiError::bad_request(format!("customer id `{id}` is not a non-negative integer")))?;
    let windows = state.store.customer_windows(customer_id).await?;
    if windows.is_empty() {
        return Err(ApiError::not_found(format!("no usage recorded for customer {customer_id}")));
    }
    let mut by_utility: BTreeMap<Utility, UtilityUsage> = BTreeMap::new();
    for window in windows {
        let usage = by_utility.entry(window.utility).or_insert_with(|| UtilityUsage {
            utility: window.utility,
            unit: window.utility.unit(),
            today: None,
            past_days: Vec::new(),
            windows: Vec::new(),
        });
        if window.slot.width_ms == DAY_MS {
            usage.past_days.push(window);
        } else {
            usage.windows.push(window);
        }
    }
    for usage in by_utility.values_mut() {
        usage.past_days.sort_by_key(|window| window.slot.start_ms);
        usage.today = usage.past_days.pop();
    }
    Ok(Json(CustomerUsage { customer_id, utilities: by_utility.into_values().collect() }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegionUsage {
    code: &'static str,
    name: &'static str,
    population: u32,
    /// Start of the newest day with readings, UTC ms.
    day_start_ms: Option<i64>,
    utilities: Vec<RegionUtilityTotal>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegionUtilityTotal {
    utility: Utility,
    unit: &'static str,
    #[serde(flatten)]
    total: Aggregate,
    per_capita: f64,
}

pub(crate) async fn regions(State(state): State<AppState>) -> Result<Json<Vec<RegionUsage>>, ApiError> {
    let days = state.store.region_windows(DAY_MS, 0).await?;
    let newest_day = days.iter().map(|window| window.window.slot.start_ms).max();
    let mut rows: Vec<RegionUsage> = REGIONS
        .iter()
        .map(|row| RegionUsage {
            code: row.code,
            name: row.name,
            population: row.population,
            day_start_ms: newest_day,
            utilities: Vec::new(),
        })
        .collect();
    for window in days.iter().filter(|window| Some(window.window.slot.start_ms) == newest_day) {
        let row = &mut rows[window.region.index()];
        row.utilities.push(RegionUtilityTotal {
            utility: window.window.utility,
            unit: window.window.utility.unit(),
            total: window.window.aggregate,
            per_capita: window.window.aggregate.sum / f64::from(window.region.info().population),
        });
    }
    Ok(Json(rows))
}
