//! Live updates by Server-Sent Events: a customer's newest windows, and the
//! country's regions. Each stream looks every `live_interval` and sends an
//! event when what it shows has changed. The streams of one view share one
//! snapshot per interval ([`LiveStreams`]), so a thousand dashboards on the
//! country view cost the serving store one read per interval; the number of
//! open streams is capped (503 beyond), and each stream checks its session
//! every interval and ends when the session does (a logout, an expiry).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use auth_core::Utility;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use crate::routes::region_overview;
use crate::session::Caller;
use crate::usage::{DAY_MS, MAX_DAY_MS, MINUTE_MS, Point};
use crate::{ApiError, AppState, now_ms};

/// Minute windows a customer update carries.
const LIVE_MINUTES: usize = 60;
/// Live streams one API process serves at once, unless told otherwise.
pub const DEFAULT_MAX_LIVE_STREAMS: usize = 1_000;
/// Snapshots kept at most (one per view and interval).
const SNAPSHOTS_KEPT: u64 = 10_000;

/// What the live streams of one API process share: the cap on open streams
/// and the snapshots of the current interval, by view.
pub struct LiveStreams {
    slots: Arc<Semaphore>,
    max: usize,
    snapshots: moka::future::Cache<(String, i64), Arc<str>>,
}

impl LiveStreams {
    pub fn new(max_streams: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_streams)),
            max: max_streams,
            snapshots: moka::future::Cache::builder()
                .max_capacity(SNAPSHOTS_KEPT)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// A slot for one more stream; 503 when every slot is taken.
    fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            ApiError::unavailable(format!("{} live streams are open, the most this server keeps; try again later", self.max))
        })
    }
}

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
    let now = now_ms();
    let mut utilities = Vec::new();
    for utility in Utility::ALL {
        let own: Vec<_> = windows.iter().filter(|window| window.utility == utility).collect();
        if own.is_empty() {
            continue;
        }
        let today = own
            .iter()
            // The day window that holds now: the customer's local day, which began at most 25 hours ago.
            .filter(|window| window.slot.width_ms == DAY_MS && window.slot.start_ms <= now && now - window.slot.start_ms < MAX_DAY_MS)
            .map(|window| Point::from_window(window))
            .next_back();
        let minutes: Vec<Point> = own.iter().filter(|window| window.slot.width_ms == MINUTE_MS).map(|window| Point::from_window(window)).collect();
        let minutes = minutes[minutes.len().saturating_sub(LIVE_MINUTES)..].to_vec();
        utilities.push(LiveUtility { utility: utility.as_str().into(), unit: utility.unit().into(), today, minutes });
    }
    Ok(LiveCustomer { customer_id, utilities })
}

/// What one live stream sends: `snapshot()` of `view`, as `event`.
struct LiveView<F> {
    view: String,
    event: &'static str,
    snapshot: F,
}

/// Sends the view's snapshot now and whenever it changes, every interval,
/// while the caller's session lasts and the server runs.
fn changes<F, Fut, T>(
    state: AppState,
    caller: Caller,
    permit: OwnedSemaphorePermit,
    live: LiveView<F>,
) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, ApiError>> + Send,
    T: Serialize,
{
    let ticks = tokio::time::interval(state.live_interval);
    let stop = state.live_stopped();
    let live = Arc::new(live);
    let start = (ticks, stop, state, caller, permit, live, None::<Arc<str>>);
    futures::stream::unfold(start, move |(mut ticks, mut stop, state, caller, permit, live, mut last)| async move {
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return None,
            }
            match state.sessions.still_valid(&caller).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(err) => {
                    let message = format!("{{\"error\":\"status {}\"}}", err.status().as_u16());
                    let event = Event::default().event("problem").data(message);
                    return Some((Ok(event), (ticks, stop, state, caller, permit, live, last)));
                }
            }
            match shared_snapshot(&state, &live).await {
                Ok(data) => {
                    if last.as_ref() != Some(&data) {
                        last = Some(Arc::clone(&data));
                        let event = Event::default().event(live.event).data(&*data);
                        return Some((Ok(event), (ticks, stop, state, caller, permit, live, last)));
                    }
                }
                Err(status) => {
                    let message = format!("{{\"error\":\"status {status}\"}}");
                    let event = Event::default().event("problem").data(message);
                    return Some((Ok(event), (ticks, stop, state, caller, permit, live, last)));
                }
            }
        }
    })
}

/// The view's snapshot of the current interval: taken by the first stream
/// that asks in it, shared by the others (concurrent askers wait for it).
async fn shared_snapshot<F, Fut, T>(state: &AppState, live: &LiveView<F>) -> Result<Arc<str>, u16>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
    T: Serialize,
{
    let interval_ms = i64::try_from(state.live_interval.as_millis()).unwrap_or(i64::MAX).max(1);
    let key = (live.view.clone(), now_ms().div_euclid(interval_ms));
    state
        .live
        .snapshots
        .try_get_with(key, async {
            let value = (live.snapshot)().await.map_err(|err| err.status().as_u16())?;
            serde_json::to_string(&value).map(Arc::from).map_err(|_| 500)
        })
        .await
        .map_err(|status: Arc<u16>| *status)
}

/// A customer's live usage: a `usage` event (today so far and the newest
/// minute windows per utility) now and on every change.
#[utoipa::path(get, path = "/api/v1/customers/{id}/live", tag = "customers",
    params(("id" = u64, Path, description = "customer id")),
    responses((status = 200, description = "text/event-stream of `usage` events", body = LiveCustomer, content_type = "text/event-stream"),
              (status = 401, description = "not logged in"), (status = 403, description = "another customer"),
              (status = 503, description = "the server keeps as many live streams as it may")))]
pub(crate) async fn customer_live(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let customer_id: u64 =
        id.parse().map_err(|_| ApiError::bad_request(format!("customer id `{id}` is not a non-negative integer")))?;
    caller.may_see_customer(customer_id)?;
    let permit = state.live.admit()?;
    let reader = state.clone();
    let snapshot = move || {
        let state = reader.clone();
        async move { customer_snapshot(&state, customer_id).await }
    };
    let live = LiveView { view: format!("customer:{customer_id}"), event: "usage", snapshot };
    Ok(Sse::new(changes(state, caller, permit, live)).keep_alive(KeepAlive::default()))
}

/// The country view live: a `regions` event (every region's newest day, as
/// `GET /api/v1/regions`) now and on every change.
#[utoipa::path(get, path = "/api/v1/live/regions", tag = "regions",
    responses((status = 200, description = "text/event-stream of `regions` events", content_type = "text/event-stream"),
              (status = 401, description = "not logged in"),
              (status = 503, description = "the server keeps as many live streams as it may")))]
pub(crate) async fn regions_live(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = state.live.admit()?;
    let reader = state.clone();
    let snapshot = move || {
        let state = reader.clone();
        async move { region_overview(&state).await }
    };
    let live = LiveView { view: "regions".into(), event: "regions", snapshot };
    Ok(Sse::new(changes(state, caller, permit, live)).keep_alive(KeepAlive::default()))
}
