//! `auth archive`: one archiver of the pipeline's group, Kafka -> Parquet master data.

use std::net::SocketAddr;

use anyhow::Context;
use auth_master::MasterStore;
use auth_master::archiver::Archiver;
use auth_runtime::telemetry::serve_metrics;
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;

use auth_adapters::Embedded;
use crate::common::CommonArgs;

#[derive(Args)]
pub struct ArchiveArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Master data location instead of the spec's `archive.url`: a directory or `s3://bucket/prefix`.
    #[arg(long, env = "AUTH_MASTER_URL")]
    master_url: Option<String>,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "AUTH_METRICS_LISTEN", default_value = "127.0.0.1:9467")]
    metrics_listen: SocketAddr,
}

pub async fn run(args: ArchiveArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let mut spec = args.common.spec()?;
    let pipeline = &args.common.pipeline;
    if let Some(url) = args.master_url {
        spec.archive.url = url;
    }
    let master = MasterStore::open(&spec.archive.url).context("archive.url")?;
    let log = auth_adapters::log(&spec, "archive", Embedded::Refused)?;
    auth_adapters::ensure_topics(log.as_ref(), &spec, pipeline).await?;
    let shutdown = auth_runtime::shutdown::on_signals();
    let metrics_server = serve_metrics(args.metrics_listen, metrics, shutdown.clone()).await?;
    tracing::info!(group = %auth_core::archive_group(pipeline), master = %master.location(), "archiver starting");
    let mut archiver = Archiver::join(master, log.as_ref(), pipeline, &spec)?;
    let outcome = archiver.run(log.as_ref(), &shutdown).await.context("archiver");
    shutdown.cancel();
    metrics_server.await.context("metrics server task")??;
    let tally = outcome?;
    tracing::info!(readings = tally.readings, files = tally.files, skipped = tally.skipped, "archiver stopped cleanly");
    Ok(())
}
