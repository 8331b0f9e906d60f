//! The HTTP API of AUTH and its dashboard.
//!
//! Under `/api/v1` (described by the OpenAPI document at
//! `/api/v1/openapi.json`): accounts (`login`, `logout`, `tokens`, `me`), a
//! customer's usage by utility, range and granularity, today against
//! yesterday and live updates (Server-Sent Events); regions, their usage over
//! time, their top consumers (operators only) and a live country view; the
//! pipeline's health (operators only); the meter registry (operators manage
//! it, a customer sees their own meters); data quality (operators only: the
//! meters that missed intervals of a day or have suspect readings; their
//! edits and approvals of intervals, with an audit log per meter). `/` serves the dashboard, `/healthz`
//! and `/metrics` the probes. Build the [`router`] over an [`AppState`];
//! tests drive it with `oneshot`.
//!
//! The serving layer ([`usage`]) merges the batch's closed days (results
//! database) with the stream's windows (serving store). Access: a customer
//! account sees its own customer id; an operator sees everything ([`session`]).

mod edits;
mod error;
mod live;
mod overview;
mod registry;
mod quality;
mod routes;
pub mod session;
pub mod usage;
mod web;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth_core::ports::ServingStore;
use auth_runtime::http::HttpLimits;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use utoipa::OpenApi;

pub use error::ApiError;
pub use live::{DEFAULT_MAX_LIVE_STREAMS, LiveStreams};
pub use overview::PipelineProbe;
pub use session::{LoginLimits, Sessions};

/// Requests served, by `route` template and `status`.
pub const METRIC_REQUESTS: &str = "auth_api_requests_total";
/// Request latency, by `route` template.
pub const METRIC_REQUEST_DURATION: &str = "auth_api_request_duration_seconds";
/// When the batch last computed a date successfully, Unix seconds (from the results database).
pub const METRIC_BATCH_LAST_SUCCESS: &str = "auth_batch_last_success_timestamp_seconds";
/// Seconds that run took, all of it: compute, write, restate (from the results database).
pub const METRIC_BATCH_DURATION: &str = "auth_batch_duration_seconds";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ServingStore>,
    /// Accounts and tokens, over the results database (which also holds the batch's days).
    pub sessions: Arc<Sessions>,
    pub probe: Arc<PipelineProbe>,
    pub metrics: PrometheusHandle,
    /// How often a live stream looks for changes.
    pub live_interval: Duration,
    /// A day the batch computed is served from its results only when it was
    /// computed this long after the day's end (the stream's lateness and the
    /// archiver's roll: the time late readings take to reach the master data).
    pub batch_settle_ms: i64,
    /// Windows the serving store keeps per customer or region, utility and
    /// width (`serving.recentWindows`): a series holding that many may have
    /// lost older ones.
    pub recent_windows: usize,
    /// Turns true when the server stops, which ends the live streams.
    live_stop: Arc<watch::Sender<bool>>,
    /// The cap on open live streams and their shared snapshots.
    pub(crate) live: Arc<LiveStreams>,
    /// `/api/v1/pipeline`'s body, computed at most once per [`PROBE_REFRESH`].
    pub(crate) overview: moka::future::Cache<(), Arc<str>>,
    /// The batch's last run as `/metrics` shows it, read at most once per [`PROBE_REFRESH`].
    pub(crate) batch_gauges: moka::future::Cache<(), ()>,
}

/// How long `/api/v1/pipeline` and the batch's gauges of `/metrics` are
/// served from what was read before: a scraper or a hostile client polling
/// them costs the log, the serving store and the database one read per this.
pub const PROBE_REFRESH: Duration = Duration::from_secs(2);

impl AppState {
    /// The state of a server; live streams look for changes every second, and
    /// a batch day is final when it was computed after the day's end.
    /// The state of a pipeline's API: its serving store and log, and the
    /// results database the spec names (which holds the accounts); batch
    /// days are served once they settled ([`auth_core::PipelineSpec::settle_ms`]).
    pub async fn for_pipeline(
        spec: &auth_core::PipelineSpec,
        pipeline: &str,
        store: Arc<dyn ServingStore>,
        log: Arc<dyn auth_core::ports::ReadingLog>,
        metrics: PrometheusHandle,
    ) -> Result<Self, auth_results::ResultsError> {
        let db = auth_results::Database::connect(&spec.batch.database_url).await?;
        let topics = spec.utilities.iter().map(|&utility| auth_core::utility_topic(pipeline, utility)).collect();
        let sessions = Arc::new(Sessions::new(db, LoginLimits::default()));
        let mut state = Self::new(store, sessions, Arc::new(PipelineProbe::new(log, topics)), metrics);
        state.batch_settle_ms = spec.settle_ms();
        state.recent_windows = spec.serving.recent_windows.max(1) as usize;
        Ok(state)
    }

    pub fn new(store: Arc<dyn ServingStore>, sessions: Arc<Sessions>, probe: Arc<PipelineProbe>, metrics: PrometheusHandle) -> Self {
        let (live_stop, _) = watch::channel(false);
        Self {
            store,
            sessions,
            probe,
            metrics,
            live_interval: Duration::from_secs(1),
            batch_settle_ms: 0,
            recent_windows: auth_core::spec::ServingSpec::default().recent_windows as usize,
            live_stop: Arc::new(live_stop),
            live: Arc::new(LiveStreams::new(DEFAULT_MAX_LIVE_STREAMS)),
            overview: refreshed_every(PROBE_REFRESH),
            batch_gauges: refreshed_every(PROBE_REFRESH),
        }
    }

    /// At most `max` live streams at once; the next one gets 503.
    pub fn limit_live_streams(&mut self, max: usize) {
        self.live = Arc::new(LiveStreams::new(max));
    }

    pub(crate) fn live_stopped(&self) -> watch::Receiver<bool> {
        self.live_stop.subscribe()
    }
}

/// A one-value cache that computes its value again once it is `refresh` old.
fn refreshed_every<V: Clone + Send + Sync + 'static>(refresh: Duration) -> moka::future::Cache<(), V> {
    moka::future::Cache::builder().max_capacity(1).time_to_live(refresh).build()
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "AUTH API", description = "Live and batch-corrected usage of utility customers and regions."),
    paths(
        session::login, session::logout, session::issue_token, session::me,
        routes::customer_usage, routes::customer_today, live::customer_live,
        routes::regions, routes::region_usage, routes::region_top, live::regions_live,
        overview::pipeline,
        registry::summary, registry::meter, registry::put_meter, registry::delete_meter, registry::customer_meters,
        quality::gaps,
        quality::suspect,
        quality::silent,
        quality::meter_day, edits::edit, edits::approve, edits::audit,
    ),
    tags((name = "accounts"), (name = "customers"), (name = "regions"), (name = "pipeline"), (name = "registry"), (name = "quality"))
)]
struct ApiDoc;

/// The OpenAPI document of `/api/v1`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi())
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(web::routes())
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/login", post(session::login))
        .route("/api/v1/logout", post(session::logout))
        .route("/api/v1/tokens", post(session::issue_token))
        .route("/api/v1/me", get(session::me))
        .route("/api/v1/customers/{id}/usage", get(routes::customer_usage))
        .route("/api/v1/customers/{id}/today", get(routes::customer_today))
        .route("/api/v1/customers/{id}/live", get(live::customer_live))
        .route("/api/v1/regions", get(routes::regions))
        .route("/api/v1/regions/{code}/usage", get(routes::region_usage))
        .route("/api/v1/regions/{code}/top", get(routes::region_top))
        .route("/api/v1/live/regions", get(live::regions_live))
        .route("/api/v1/pipeline", get(overview::pipeline))
        .route("/api/v1/registry", get(registry::summary))
        .route("/api/v1/registry/meters/{id}", get(registry::meter).put(registry::put_meter).delete(registry::delete_meter))
        .route("/api/v1/customers/{id}/meters", get(registry::customer_meters))
        .route("/api/v1/quality/gaps", get(quality::gaps))
        .route("/api/v1/quality/suspect", get(quality::suspect))
        .route("/api/v1/quality/silent", get(quality::silent))
        .route("/api/v1/meters/{id}/edits", post(edits::edit))
        .route("/api/v1/meters/{id}/approvals", post(edits::approve))
        .route("/api/v1/meters/{id}/audit", get(edits::audit))
        .route("/api/v1/meters/{id}/quality", get(quality::meter_day))
        .fallback(routes::not_found)
        .layer(middleware::from_fn(record_request))
        .with_state(state)
}

async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(METRIC_REQUEST_DURATION, "route" => route.clone()).record(started.elapsed().as_secs_f64());
    metrics::counter!(METRIC_REQUESTS, "route" => route, "status" => response.status().as_u16().to_string()).increment(1);
    response
}

/// Serves only `/metrics` (with the batch's last run) and `/healthz` on a
/// listener of their own, e.g. a port apart from the public API.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route("/healthz", get(routes::healthz)).route("/metrics", get(routes::metrics)).with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight; with the header-read and request timeouts of
/// [`HttpLimits::default`]. Live streams end with the shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let live_stop = Arc::clone(&state.live_stop);
    let shutdown = async move {
        shutdown.await;
        live_stop.send_replace(true);
    };
    auth_runtime::http::serve(listener, router(state), HttpLimits::default(), shutdown).await
}
