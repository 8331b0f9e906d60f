//! Logs (`tracing`) and metrics (Prometheus) for every role.

use std::io::IsTerminal;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Buckets of every `*_seconds` histogram, from 100 µs to 10 s.
const SECONDS_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0, 10.0];

/// Starts logging to stderr with `filter` and installs the metrics recorder,
/// returning the handle that renders `/metrics`.
pub fn init(filter: &str) -> anyhow::Result<PrometheusHandle> {
    let filter = EnvFilter::try_new(filter).with_context(|| format!("invalid log filter `{filter}` (--log / AUTH_LOG)"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .context("configuring metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")
}

/// Serves `/metrics` and `/healthz` on `address` until `shutdown` is cancelled.
pub async fn serve_metrics(
    address: SocketAddr,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (--metrics-listen / AUTH_METRICS_LISTEN)"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%address, "serving /metrics and /healthz");
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(metrics.render())))
        .route("/healthz", get(|| std::future::ready("ok")));
    Ok(tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await.context("metrics server")
    }))
}
