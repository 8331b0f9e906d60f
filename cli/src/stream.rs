//! `auth stream`: one stream processor of the pipeline's consumer group.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use auth_runtime::telemetry::serve_metrics;
use auth_stream::{Processor, ProcessorConfig};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;

use auth_adapters::Embedded;
use crate::common::CommonArgs;

#[derive(Args)]
pub struct StreamArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "AUTH_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    metrics_listen: SocketAddr,
    /// Stop (after a final checkpoint) once every partition of this processor
    /// is processed to the end of the log: for backfills and replays.
    #[arg(long)]
    exit_when_caught_up: bool,
}

pub async fn run(args: StreamArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let spec = args.common.spec()?;
    let pipeline = &args.common.pipeline;
    let log = auth_adapters::log(&spec, "stream", Embedded::Refused)?;
    let store = auth_adapters::store(&spec, pipeline, "stream", Embedded::Refused).await?;
    auth_adapters::ensure_topics(log.as_ref(), &spec, pipeline).await?;
    let shutdown = auth_runtime::shutdown::on_signals();
    let metrics_server = serve_metrics(args.metrics_listen, metrics, shutdown.clone()).await?;

    let config = ProcessorConfig::from_spec(pipeline, &spec);
    tracing::info!(group = %config.group, topics = ?config.topics(), "stream processor starting");
    let mut processor = Processor::new(config, log.as_ref(), store)?;
    let outcome = if args.exit_when_caught_up {
        processor.drain(log.as_ref()).await.context("stream processor")
    } else {
        processor.run(Arc::clone(&log), shutdown.clone()).await.context("stream processor")
    };
    shutdown.cancel();
    metrics_server.await.context("metrics server task")??;
    outcome?;
    tracing::info!("stream processor stopped cleanly");
    Ok(())
}
