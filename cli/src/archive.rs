//! `auth archive`: one archiver of the pipeline's group, Kafka -> Parquet master data.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use auth_core::utility_topic;
use auth_master::MasterStore;
use auth_master::archiver::Archiver;
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::adapters::{self, ServerArgs};

#[derive(Args)]
pub struct ArchiveArgs {
    /// Pipeline spec (YAML) naming Kafka (`log.url`) and the master data (`archive.url`).
    #[arg(long, env = "AUTH_CONFIG")]
    config: Option<PathBuf>,
    /// Pipeline name: topics `<pipeline>.<utility>`, group `<pipeline>.archive`.
    #[arg(long, env = "AUTH_PIPELINE", default_value = "auth")]
    pipeline: String,
    #[command(flatten)]
    servers: ServerArgs,
    /// Master data location instead of the spec's `archive.url`: a directory or `s3://bucket/prefix`.
    #[arg(long, env = "AUTH_MASTER_URL")]
    master_url: Option<String>,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "AUTH_METRICS_LISTEN", default_value = "127.0.0.1:9467")]
    metrics_listen: SocketAddr,
}

/// The consumer group of a pipeline's archivers.
pub fn group(pipeline: &str) -> String {
    format!("{pipeline}.archive")
}

pub async fn run(args: ArchiveArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let mut spec = args.servers.apply(crate::load_spec(args.config.as_deref())?)?;
    if let Some(url) = args.master_url {
        spec.archive.url = url;
    }
    let master = MasterStore::open(&spec.archive.url).context("archive.url")?;
    let log = adapters::log(&spec, "archive", false)?;
    adapters::ensure_topics(log.as_ref(), &spec, &args.pipeline).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_server = crate::telemetry::serve_metrics(args.metrics_listen, metrics, crate::up::stopped(stop_rx.clone())).await?;
    let topics: Vec<_> = spec.utilities.iter().map(|&utility| (utility_topic(&args.pipeline, utility), utility)).collect();
    let names: Vec<String> = topics.iter().map(|(topic, _)| topic.clone()).collect();
    let consumer = log.consumer(&group(&args.pipeline), &names)?;
    tracing::info!(group = %group(&args.pipeline), master = %master.location(), "archiver starting");
    let mut archiver = Archiver::new(master, consumer, topics, spec.archive.clone());
    let (archive_stop_tx, archive_stop_rx) = watch::channel(false);
    let signal = tokio::spawn(async move {
        crate::up::shutdown_signal().await;
        let _ = archive_stop_tx.send(true);
    });
    let outcome = archiver.run(archive_stop_rx).await.context("archiver");
    signal.abort();
    let _ = stop_tx.send(true);
    metrics_server.await.context("metrics server task")??;
    let tally = outcome?;
    tracing::info!(readings = tally.readings, files = tally.files, skipped = tally.skipped, "archiver stopped cleanly");
    Ok(())
}
