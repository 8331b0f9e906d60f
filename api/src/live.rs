//! Live updates by Server-Sent Events: a customer's newest windows, and the
//! country's regions. Each stream looks at the serving store every
//! `live_interval` and sends an event when what it shows has changed.

use std::convert::Infallible;
use std::time::Duration;

use auth_core::Utility;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::routes::region_overview;
use crate::session::Caller;
use crate::usage::{DAY_MS, MINUTE_MS, Point};
use crate::{ApiError, AppState, now_ms};

/// Minute windows a customer update carries.
const LIVE_MINUTES: usize = 60;

/// A customer's live view of one utility.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveUtility {
    utility: String,
    unit: String,
    /// Today's window so far.
    today: Option<Point>,
    /// The newest minute windows, oldest first.
    minutes: Vec<Point>,
}

/// One `usage` event of a customer's live stream.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveCustomer {
    customer_id: u64,
    utilities: Vec<LiveUtility>,
}

async fn customer_snapshot(state: &AppState, customer_id: u64) -> Result<LiveCustomer, ApiError> {
    let windows = state.store.customer_windows(customer_id).await?;
    let today_start = now_ms().div_euclid(DAY_MS) * DAY_MS;
    let mut utilities = Vec::new();
    for utility in Utility::ALL {
        let own: Vec<_> = windows.iter().filter(|window| window.utility == utility).collect();
        if own.is_empty() {
            continue;
        }
        let today = own
            .iter()
            .filter(|window| window.slot.width_ms == DAY_MS && window.slot.start_ms >= today_start)
            .map(|window| Point::from_window(window))
            .next_back();
        let minutes: Vec<Point> = own.iter().filter(|window| window.slot.width_ms == MINUTE_MS).map(|window| Point::from_window(window)).collect();
        let minutes = minutes[minutes.len().saturating_sub(LIVE_MINUTES)..].to_vec();
        utilities.push(LiveUtility { utility: utility.as_str().into(), unit: utility.unit().into(), today, minutes });
    }
    Ok(LiveCustomer { customer_id, utilities })
}

/// Sends `snapshot()` as `event` now and whenever it changes, every `interval`.
fn changes<F, Fut, T>(
    interval: Duration,
    stop: watch::Receiver<bool>,
    event: &'static str,
    snapshot: F,
) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ApiError>> + Send,
    T: Serialize,
{
    let ticks = tokio::time::interval(interval);
    futures::stream::unfold((ticks, stop, snapshot, String::new()), move |(mut ticks, mut stop, snapshot, mut last)| async move {
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return None,
            }
            match snapshot().await {
                Ok(value) => {
                    let Ok(data) = serde_json::to_string(&value) else { continue };
                    if data != last {
                        last.clone_from(&data);
                        return Some((Ok(Event::default().event(event).data(data)), (ticks, stop, snapshot, last)));
                    }
                }
                Err(err) => {
                    let message = format!("{{\"error\":\"status {}\"}}", err.status().as_u16());
                    return Some((Ok(Event::default().event("problem").data(message)), (ticks, stop, snapshot, last)));
                }
            }
        }
    })
}

/// A customer's live usage: a `usage` event (today so far and the newest
/// minute windows per utility) now and on every change.
#[utoipa::path(get, path = "/api/v1/customers/{id}/live", tag = "customers",
    params(("id" = u64, Path, description = "customer id")),
    responses((status = 200, description = "text/event-stream of `usage` events", body = LiveCustomer, content_type = "text/event-stream"),
              (status = 401, description = "not logged in"), (status = 403, description = "another customer")))]
pub(crate) async fn customer_live(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let customer_id: u64 =
        id.parse().map_err(|_| ApiError::bad_request(format!("customer id `{id}` is not a non-negative integer")))?;
    caller.may_see_customer(customer_id)?;
    let (interval, stop) = (state.live_interval, state.live_stopped());
    let stream = changes(interval, stop, "usage", move || {
        let state = state.clone();
        async move { customer_snapshot(&state, customer_id).await }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The country view live: a `regions` event (every region's newest day, as
/// `GET /api/v1/regions`) now and on every change.
#[utoipa::path(get, path = "/api/v1/live/regions", tag = "regions",
    responses((status = 200, description = "text/event-stream of `regions` events", content_type = "text/event-stream"),
              (status = 401, description = "not logged in")))]
pub(crate) async fn regions_live(
    State(state): State<AppState>,
    _caller: Caller,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (interval, stop) = (state.live_interval, state.live_stopped());
    let stream = changes(interval, stop, "regions", move || {
        let state = state.clone();
        async move { region_overview(&state).await }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
