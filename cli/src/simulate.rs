//! `auth simulate`: the fleet's readings as NDJSON on stdout, into Kafka, or
//! through the ingest gateway over HTTP or MQTT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use auth_core::PipelineSpec;
use auth_ingest::{HttpSink, LogSink, MqttSink, ReadingSink, Simulator, edge_json, run_paced};
use auth_adapters::Embedded;
use clap::Args;

#[derive(Args)]
pub struct SimulateArgs {
    /// Pipeline spec whose `simulator` section to use.
    #[arg(long, env = "AUTH_CONFIG")]
    config: Option<PathBuf>,
    /// How many readings to produce: to stdout 100 by default; into Kafka as
    /// fast as possible, or without it, paced by `simulator.mode` until stopped.
    #[arg(long)]
    count: Option<u64>,
    /// Event time of the first heartbeat, UTC ms (default: the spec's `startMs`, else now).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Where the readings go (with --backfill: the last date, YYYY-MM-DD): `-` (NDJSON on stdout), `kafka://host:port` (the
    /// pipeline's topics), `http://host:port` (the ingest gateway) or
    /// `mqtt://host:port` (one QoS 1 message per reading to `meters/<meter id>/readings`).
    #[arg(long, default_value = "-")]
    to: String,
    /// For `--to mqtts://...`: the CA certificate (PEM) that signed the broker's certificate.
    #[arg(long, env = "AUTH_MQTT_CA")]
    mqtt_ca: Option<PathBuf>,
    /// Gateway key for `--to http://...` (from `auth keys create`); with `--to mqtt://...` the broker login.
    #[arg(long, env = "AUTH_INGEST_KEY")]
    key: Option<String>,
    /// Registers the fleet's meters in the meter registry first (the results
    /// database, `batch.databaseUrl`, and the registry topic when the spec
    /// names Kafka), so that a gateway takes their readings.
    #[arg(long, env = "AUTH_SIMULATOR_REGISTER")]
    pub register: bool,
    /// The results database for `--register` instead of the spec's `batch.databaseUrl`.
    #[arg(long, env = "AUTH_DATABASE_URL", requires = "register")]
    pub database_url: Option<String>,
    /// Readings per HTTP request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Pipeline name: readings go to the topics `<pipeline>.<utility>`.
    #[arg(long, env = "AUTH_PIPELINE", default_value = "auth")]
    pipeline: String,
    /// Writes the fleet's history for --from..--to straight to the master data (--out).
    #[arg(long, requires = "from")]
    pub backfill: bool,
    /// First date of the backfill, YYYY-MM-DD (UTC); with --backfill, --to is the last date (included).
    #[arg(long, value_parser = crate::batch::date_arg, requires = "backfill")]
    pub from: Option<chrono::NaiveDate>,
    /// Master data location for the backfill (default: the spec's `archive.url`).
    #[arg(long, requires = "backfill")]
    pub out: Option<String>,
    /// Backfill tasks running at once (default: the machine's cores).
    #[arg(long, requires = "backfill")]
    pub threads: Option<usize>,
    /// Address of `/metrics` and `/healthz` while producing into Kafka.
    #[arg(long, env = "AUTH_METRICS_LISTEN", default_value = "127.0.0.1:9465")]
    metrics_listen: SocketAddr,
}

impl SimulateArgs {
    pub fn to_stdout(&self) -> bool {
        self.to == "-" && !self.backfill
    }
}

fn simulator(args: &SimulateArgs, spec: &PipelineSpec) -> Simulator {
    let start_ms = args.start_ms.or(spec.simulator.start_ms).unwrap_or_else(auth_core::now_ms);
    Simulator::new(&spec.simulator, start_ms)
}

pub fn to_stdout(args: &SimulateArgs) -> anyhow::Result<()> {
    let spec = crate::common::load_spec(args.config.as_deref())?;
    let mut simulator = simulator(args, &spec);
    let count = args.count.unwrap_or(100);
    let mut batch = Vec::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0;
    while printed < count {
        batch.clear();
        simulator.fill(&mut batch, (count - printed).min(4_096) as usize);
        for item in &batch {
            writeln!(out, "{}", edge_json(item)).context("writing to stdout")?;
        }
        printed += batch.len() as u64;
    }
    out.flush().context("writing to stdout")
}

/// Where `--to` sends readings.
enum Target {
    Kafka,
    Http,
    Mqtt,
}

fn target(to: &str) -> anyhow::Result<Target> {
    if to.starts_with("kafka://") {
        Ok(Target::Kafka)
    } else if to.starts_with("http://") || to.starts_with("https://") {
        Ok(Target::Http)
    } else if to.starts_with("mqtt://") || to.starts_with("mqtts://") {
        Ok(Target::Mqtt)
    } else {
        anyhow::bail!("--to {to}: expected -, kafka://host:port, http://gateway:port or mqtt://broker:port")
    }
}

/// `--backfill`: the history of a range of dates into the master data.
pub async fn backfill(args: SimulateArgs) -> anyhow::Result<()> {
    let spec = crate::common::load_spec(args.config.as_deref())?;
    let Some(from) = args.from else { anyhow::bail!("--backfill needs --from and --to") };
    let to = crate::batch::date_arg(&args.to).map_err(|err| anyhow::anyhow!("--backfill needs --to <last date>: {err}"))?;
    let out = args.out.clone().unwrap_or_else(|| spec.archive.url.clone());
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    let started = Instant::now();
    let written = crate::backfill::run(&spec, from, to, &out, threads).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "backfilled {} readings from {from} to {to} into {out}: {} files, {:.1} MiB, in {seconds:.1} s, {:.0} readings/s",
        written.readings,
        written.files,
        written.bytes as f64 / (1024.0 * 1024.0),
        written.readings as f64 / seconds.max(1e-9)
    );
    Ok(())
}

pub async fn to_servers(args: SimulateArgs, metrics: metrics_exporter_prometheus::PrometheusHandle) -> anyhow::Result<()> {
    let target = target(&args.to)?;
    let spec = crate::common::load_spec(args.config.as_deref())?;
    let shutdown = auth_runtime::shutdown::on_signals();
    let metrics_server = auth_runtime::telemetry::serve_metrics(args.metrics_listen, metrics, shutdown.clone()).await?;
    if args.register {
        let url = args.database_url.as_deref().unwrap_or(&spec.batch.database_url);
        let db = auth_results::Database::connect(url).await.context("batch.databaseUrl / --database-url (for --register)")?;
        let fleet = simulator(&args, &spec).fleet().registry(crate::registry::SIMULATED_INTERVAL_SECS);
        let imported = crate::registry::import(&db, &spec, &args.pipeline, &fleet, false).await.context("registering the fleet")?;
        tracing::info!(meters = imported.meters, revision = imported.revision, "fleet registered");
    }
    let started = Instant::now();
    let written = match target {
        Target::Kafka => {
            let mut spec = spec;
            spec.log.url = Some(args.to.clone());
            crate::common::check(&spec).context("--to")?;
            let log = auth_adapters::log(&spec, "simulate", Embedded::Refused)?;
            auth_adapters::ensure_topics(log.as_ref(), &spec, &args.pipeline).await?;
            let sink = LogSink::new(log.producer()?, &args.pipeline, spec.log.partitions);
            produce(&args, &spec, sink, 50_000, &shutdown).await?
        }
        Target::Http => {
            let key = args.key.as_deref().context("--to http://...: the gateway needs a key (--key / AUTH_INGEST_KEY)")?;
            let sink = HttpSink::new(&args.to, key, args.batch);
            produce(&args, &spec, sink, 50_000, &shutdown).await?
        }
        Target::Mqtt => {
            let client_id = format!("auth-simulate-{}", std::process::id());
            let ca = args.mqtt_ca.as_deref().map(crate::ingest::read_ca).transpose()?;
            let sink = MqttSink::connect(&args.to, &client_id, args.key.as_deref(), ca.as_deref()).context("--to / --key / --mqtt-ca")?;
            produce(&args, &spec, sink, 5_000, &shutdown).await?
        }
    };
    shutdown.cancel();
    metrics_server.await.context("metrics server task")??;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "wrote {written} readings to {} (pipeline `{}`) in {seconds:.1} s, {:.0} readings/s",
        args.to,
        args.pipeline,
        written as f64 / seconds.max(1e-9)
    );
    Ok(())
}

/// Writes `--count` readings as fast as the sink takes them, else paced until stopped.
async fn produce<S>(
    args: &SimulateArgs,
    spec: &PipelineSpec,
    mut sink: S,
    chunk: u64,
    shutdown: &auth_runtime::CancellationToken,
) -> anyhow::Result<u64>
where
    S: ReadingSink,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let mut simulator = simulator(args, spec);
    match args.count {
        Some(count) => {
            let mut batch = Vec::with_capacity(chunk as usize);
            let mut written = 0;
            while written < count {
                batch.clear();
                simulator.fill(&mut batch, (count - written).min(chunk) as usize);
                sink.write(&batch).await.context("sending readings")?;
                written += batch.len() as u64;
                metrics::counter!(auth_ingest::METRIC_SIMULATED).increment(batch.len() as u64);
            }
            Ok(written)
        }
        None => run_paced(&mut simulator, &mut sink, &spec.simulator, None, shutdown.cancelled())
            .await
            .context("sending readings"),
    }
}
