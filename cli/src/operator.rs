//! `auth operator`: the Kubernetes operator. Replicas elect a leader through
//! a Lease; the leader reconciles every `UtilityPipeline` in the cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use auth_operator::{Context, LeaderLease};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

#[derive(Args)]
pub struct OperatorArgs {
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "AUTH_METRICS_LISTEN", default_value = "127.0.0.1:9468")]
    metrics_listen: SocketAddr,
    /// This replica's name in the leader Lease and in events (the pod name on Kubernetes);
    /// the host name and process id when absent.
    #[arg(long, env = "AUTH_OPERATOR_IDENTITY")]
    identity: Option<String>,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "AUTH_OPERATOR_LEASE_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease; replicas sharing it elect one leader.
    #[arg(long, env = "AUTH_OPERATOR_LEASE", default_value = "auth-operator")]
    lease: String,
    /// Watch the pipelines of this namespace only (every namespace when absent).
    #[arg(long, env = "AUTH_OPERATOR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Seconds a leader that stops renewing keeps the Lease.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    lease_secs: u64,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_owned()).unwrap_or_default();
    format!("{}-{}", if host.is_empty() { "auth-operator" } else { &host }, std::process::id())
}

pub async fn run(args: OperatorArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let client = auth_operator::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG, ~/.kube/config or the pod's service account)")?;
    let identity = args.identity.unwrap_or_else(default_identity);
    let shutdown = auth_runtime::shutdown::on_signals();
    let metrics_server = auth_runtime::telemetry::serve_metrics(args.metrics_listen, metrics, shutdown.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let context = Arc::new(Context::new(client.clone(), &identity).watching(args.watch_namespace));
    auth_operator::controller::require_crd(&context).await?;
    let lease = LeaderLease::new(client, &args.lease_namespace, &args.lease, &identity, Duration::from_secs(args.lease_secs));
    tracing::info!(%identity, lease = %args.lease, namespace = %args.lease_namespace, "operator starting");
    let leading = tokio::spawn(auth_operator::lead(lease, context, stop_rx));
    shutdown.cancelled().await;
    let _ = stop_tx.send(true);
    leading.await.context("operator task")?;
    metrics_server.await.context("metrics server task")??;
    tracing::info!("operator stopped");
    Ok(())
}
