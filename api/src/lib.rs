//! The HTTP API of AUTH and its live page.
//!
//! `GET /api/v1/customers/{id}/usage`, `GET /api/v1/regions`, `/healthz`,
//! `/metrics`, and `/`, a plain page that shows one customer's live usage.
//! Build the [`router`] over a serving store; tests drive it with `oneshot`.

mod error;
mod routes;

use std::sync::Arc;
use std::time::Instant;

use auth_core::ports::ServingStore;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::ApiError;

/// Requests served, by `route` template and `status`.
pub const METRIC_REQUESTS: &str = "auth_api_requests_total";
/// Request latency, by `route` template.
pub const METRIC_REQUEST_DURATION: &str = "auth_api_request_duration_seconds";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ServingStore>,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(routes::page))
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .route("/api/v1/customers/{id}/usage", get(routes::customer_usage))
        .route("/api/v1/regions", get(routes::regions))
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

/// Serves `router` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use auth_core::ports::{Aggregate, PartitionFlush, TopicPartition, WindowOwner, WindowSlot, WindowUpdate};
    use auth_core::{Region, Utility};
    use auth_embedded::MemoryStore;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    use super::*;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_795_824_000_000;

    async fn state() -> AppState {
        let store = MemoryStore::new(60);
        let window = |owner, width_ms, start_ms, sum| WindowUpdate {
            owner,
            utility: Utility::Electricity,
            slot: WindowSlot { width_ms, start_ms },
            aggregate: Aggregate { sum, count: 2, min: 1.0, max: sum - 1.0 },
            closed: false,
        };
        let texas = WindowOwner::Region(Region::from_code("US-TX").expect("Texas"));
        let flush = PartitionFlush {
            partition: TopicPartition::new("p.electricity", 0),
            windows: vec![
                window(WindowOwner::Customer(7), 60_000, T0, 3.0),
                window(WindowOwner::Customer(7), 60_000, T0 + 60_000, 4.0),
                window(WindowOwner::Customer(7), DAY, T0 - DAY, 100.0),
                window(WindowOwner::Customer(7), DAY, T0, 7.0),
                window(texas, DAY, T0, 2_914_550.5),
            ],
            checkpoint: None,
        };
        store.apply(flush).await.expect("apply");
        AppState { store: Arc::new(store), metrics: PrometheusBuilder::new().build_recorder().handle() }
    }

    async fn get(uri: &str) -> (StatusCode, serde_json::Value) {
        let response = router(state().await)
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn customer_usage_has_today_and_recent_windows() {
        let (status, body) = get("/api/v1/customers/7/usage").await;
        assert_eq!(status, StatusCode::OK);
        let electricity = &body["utilities"][0];
        assert_eq!(electricity["utility"], "electricity");
        assert_eq!(electricity["unit"], "Wh");
        assert_eq!(electricity["today"]["sum"], 7.0);
        assert_eq!(electricity["today"]["startMs"], T0);
        let sums: Vec<f64> = electricity["windows"].as_array().expect("windows").iter().filter_map(|w| w["sum"].as_f64()).collect();
        assert_eq!(sums, vec![3.0, 4.0]);
    }

    #[tokio::test]
    async fn bad_and_unknown_customers() {
        let (status, body) = get("/api/v1/customers/abc/usage").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "customer id `abc` is not a non-negative integer");
        let (status, body) = get("/api/v1/customers/8/usage").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "no usage recorded for customer 8");
        let (status, _) = get("/api/v1/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn regions_list_every_region_with_per_capita_totals() {
        let (status, body) = get("/api/v1/regions").await;
        assert_eq!(status, StatusCode::OK);
        let rows = body.as_array().expect("rows");
        assert_eq!(rows.len(), 51);
        let texas = rows.iter().find(|row| row["code"] == "US-TX").expect("Texas");
        assert_eq!(texas["utilities"][0]["sum"], 2_914_550.5);
        assert_eq!(texas["utilities"][0]["perCapita"], 0.1);
        assert_eq!(texas["dayStartMs"], T0);
        let alaska = rows.iter().find(|row| row["code"] == "US-AK").expect("Alaska");
        assert_eq!(alaska["utilities"].as_array().map(Vec::len), Some(0));
    }

    #[tokio::test]
    async fn health_page_and_metrics() {
        let app = router(state().await);
        for (uri, needle) in [("/healthz", "ok"), ("/", "live usage"), ("/metrics", "")] {
            let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).expect("request")).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
            assert!(String::from_utf8_lossy(&body).contains(needle), "{uri}");
        }
    }
}
