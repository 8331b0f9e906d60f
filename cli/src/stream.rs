//! `auth stream`: one stream processor of the pipeline's consumer group.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use auth_stream::{Processor, ProcessorConfig};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::adapters::{self, ServerArgs};

#[derive(Args)]
pub struct StreamArgs {
    /// Pipeline spec (YAML) naming Kafka (`log.url`) and Redis (`serving.url`).
    #[arg(long, env = "AUTH_CONFIG")]
    config: Option<PathBuf>,
    /// Pipeline name: topics `<pipeline>.<utility>`, group `<pipeline>.stream`, Redis keys `auth:<pipeline>:`.
    #[arg(long, env = "AUTH_PIPELINE", default_value = "auth")]
    pipeline: String,
    #[command(flatten)]
    servers: ServerArgs,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "AUTH_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    metrics_listen: SocketAddr,
    /// Stop (after a final checkpoint) once every partition of this processor
    /// is processed to the end of the log: for backfills and replays.
    #[arg(long)]
    exit_when_caught_up: bool,
}

pub async fn run(args: StreamArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let spec = args.servers.apply(crate::load_spec(args.config.as_deref())?)?;
    let log = adapters::log(&spec, "stream", false)?;
    let store = adapters::store(&spec, &args.pipeline, "stream", false).await?;
    adapters::ensure_topics(log.as_ref(), &spec, &args.pipeline).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_server = crate::telemetry::serve_metrics(args.metrics_listen, metrics, crate::up::stopped(stop_rx)).await?;

    let config = ProcessorConfig::from_spec(&args.pipeline, &spec);
    tracing::info!(group = %config.group, topics = ?config.topics(), "stream processor starting");
    let mut processor = Processor::new(config, log.as_ref(), store)?;
    let outcome = if args.exit_when_caught_up {
        processor.drain(log.as_ref()).await.context("stream processor")
    } else {
        processor.run(Arc::clone(&log), crate::up::shutdown_signal()).await.context("stream processor")
    };
    let _ = stop_tx.send(true);
    metrics_server.await.context("metrics server task")??;
    outcome?;
    tracing::info!("stream processor stopped cleanly");
    Ok(())
}
