//! `auth up`: simulator and ingest gateway -> embedded log -> stream
//! processor -> in-memory serving store -> API, in one process (on Kafka and
//! Redis when the spec or the flags name them); the archiver keeps the log's
//! readings as master data in a local directory, and the batch recomputes the
//! last days from it on a short schedule and restates the serving store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use auth_core::{CustomerKind, Utility, utility_topic};
use auth_ingest::gateway::Gateway;
use auth_ingest::{LogSink, Simulator, run_paced};
use auth_master::archiver::Archiver;
use auth_stream::{Processor, ProcessorConfig};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::adapters::{self, ServerArgs};

#[derive(Args)]
pub struct UpArgs {
    /// Pipeline spec (YAML); embedded defaults when absent.
    #[arg(long, env = "AUTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the API and dashboard.
    #[arg(long, env = "AUTH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the ingest gateway (`POST /api/v1/readings`).
    #[arg(long, env = "AUTH_INGEST_LISTEN", default_value = "127.0.0.1:8088")]
    ingest_listen: SocketAddr,
    /// Pipeline name; topics are `<pipeline>.<utility>`.
    #[arg(long, env = "AUTH_PIPELINE", default_value = "auth")]
    pipeline: String,
    /// Kafka and Redis instead of the embedded log and store (else the spec's URLs, else embedded).
    #[command(flatten)]
    servers: ServerArgs,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A future that resolves once `stop` turns true.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

pub async fn run(args: UpArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let spec = args.servers.apply(crate::load_spec(args.config.as_deref())?)?;
    let log = adapters::log(&spec, "up", true)?;
    adapters::ensure_topics(log.as_ref(), &spec, &args.pipeline).await?;
    let store = adapters::store(&spec, &args.pipeline, "up", true).await?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen / AUTH_LISTEN)", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let state = crate::api::state(&spec, &args.pipeline, Arc::clone(&store), Arc::clone(&log), metrics).await?;
    // One pool to the results database: the API's accounts and the batch's days.
    let results = state.sessions.database().clone();
    let mut api = tokio::spawn(auth_api::serve(listener, state, stopped(stop_rx.clone())));

    let gateway_listener = tokio::net::TcpListener::bind(args.ingest_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--ingest-listen / AUTH_INGEST_LISTEN)", args.ingest_listen))?;
    let gateway_address = gateway_listener.local_addr().context("reading the bound address")?;
    let (demo_key, keys) = demo_key()?;
    let gateway = Gateway::new(log.producer()?, &args.pipeline, &spec, keys);
    let mut ingest = tokio::spawn(
        axum::serve(gateway_listener, gateway.router()).with_graceful_shutdown(stopped(stop_rx.clone())).into_future(),
    );

    let processor = Processor::new(ProcessorConfig::from_spec(&args.pipeline, &spec), log.as_ref(), Arc::clone(&store))?;
    let mut stream = tokio::spawn(processor.run(Arc::clone(&log), stopped(stop_rx.clone())));

    let master = auth_master::MasterStore::open(&spec.archive.url).context("archive.url")?;
    let topics: Vec<_> = spec.utilities.iter().map(|&utility| (utility_topic(&args.pipeline, utility), utility)).collect();
    let names: Vec<String> = topics.iter().map(|(topic, _)| topic.clone()).collect();
    let consumer = log.consumer(&crate::archive::group(&args.pipeline), &names)?;
    let mut archiver = Archiver::new(master.clone(), consumer, topics, spec.archive.clone());
    let archive_stop = stop_rx.clone();
    let mut archive = tokio::spawn(async move { archiver.run(archive_stop).await });
    let mut batch = tokio::spawn(crate::batch::scheduled(
        spec.clone(),
        args.pipeline.clone(),
        Arc::clone(&store),
        auth_batch::ResultsDb::of(results.clone()),
        stop_rx.clone(),
    ));

    let mut simulator = Simulator::new(&spec.simulator, spec.simulator.start_ms.unwrap_or_else(now_ms));
    let first_residential = simulator.fleet().meters().iter().find(|m| m.customer_kind == CustomerKind::Residential);
    let first_business = simulator.fleet().meters().iter().find(|m| m.customer_kind == CustomerKind::Business);
    let with_gas = simulator.fleet().meters().iter().find(|m| m.utility == Utility::Gas);
    let mut sink = LogSink::new(log.producer()?, &args.pipeline, spec.log.partitions);
    let simulator_spec = spec.simulator.clone();
    let look_at: Vec<String> = [first_residential, first_business, with_gas]
        .into_iter()
        .flatten()
        .map(|meter| format!("{} ({}{})", meter.customer_id, meter.customer_kind.as_str(), if meter.utility == Utility::Gas { ", has gas" } else { "" }))
        .collect();
    let mut logins = vec![demo_account(&results, "operator", None).await?];
    let mut demo_customers: Vec<u64> = [first_residential, first_business, with_gas].into_iter().flatten().map(|m| m.customer_id).collect();
    demo_customers.dedup();
    for customer_id in demo_customers {
        logins.push(demo_account(&results, &format!("customer-{customer_id}"), Some(customer_id)).await?);
    }
    let simulation_stop = stopped(stop_rx.clone());
    let mut simulation = tokio::spawn(async move {
        run_paced(&mut simulator, &mut sink, &simulator_spec, None, simulation_stop).await
    });

    println!("AUTH is up: {} simulated customers, pipeline `{}`.", spec.simulator.customers, args.pipeline);
    println!("  dashboard  http://{address}/");
    for (username, password, customer_id) in &logins {
        match customer_id {
            Some(id) => println!("  login      {username} / {password}   (customer {id}: their own usage)"),
            None => println!("  login      {username} / {password}   (operator: the country map, every customer, pipeline health)"),
        }
    }
    println!("  API        http://{address}/api/v1/openapi.json (POST /api/v1/tokens for a bearer token)");
    println!("  metrics    http://{address}/metrics");
    println!("  ingest     POST http://{gateway_address}/api/v1/readings with `Authorization: Bearer {demo_key}`");
    println!("  master     {} (Parquet, archived from the log)", master.location());
    println!("  results    {} (the batch, every {} s)", spec.batch.database_url, spec.batch.schedule_secs);
    println!("  customers to look at: {}", look_at.join(", "));
    println!("Press Ctrl-C to stop.");

    let early_exit = tokio::select! {
        () = shutdown_signal() => None,
        result = &mut stream => Some(("stream processor", result.map(|r| r.map_err(anyhow::Error::from)))),
        result = &mut simulation => Some(("simulator", result.map(|r| r.map(drop).map_err(anyhow::Error::from)))),
        result = &mut api => Some(("API server", result.map(|r| r.map_err(anyhow::Error::from)))),
        result = &mut ingest => Some(("ingest gateway", result.map(|r| r.map_err(anyhow::Error::from)))),
        result = &mut archive => Some(("archiver", result.map(|r| r.map(drop).map_err(anyhow::Error::from)))),
        result = &mut batch => Some(("batch", result)),
    };
    let _ = stop_tx.send(true);
    if let Some((role, result)) = early_exit {
        result.with_context(|| format!("{role} task"))?.with_context(|| format!("{role} stopped"))?;
        anyhow::bail!("{role} stopped on its own");
    }
    simulation.await.context("simulator task")?.context("simulator")?;
    stream.await.context("stream task")?.context("stream processor")?;
    api.await.context("API task")?.context("API server")?;
    ingest.await.context("ingest task")?.context("ingest gateway")?;
    archive.await.context("archiver task")?.context("archiver")?;
    batch.await.context("batch task")?.context("batch")?;
    println!("AUTH stopped cleanly.");
    Ok(())
}

/// A demo account with a fresh random password (an earlier one of that name is replaced).
async fn demo_account(
    accounts: &auth_results::Database,
    username: &str,
    customer_id: Option<u64>,
) -> anyhow::Result<(String, String, Option<u64>)> {
    let mut secret = [0u8; 6];
    getrandom::fill(&mut secret).context("random password")?;
    let password = hex::encode(secret);
    let role = if customer_id.is_some() { auth_results::Role::Customer } else { auth_results::Role::Operator };
    accounts.add_account(username, &password, role, customer_id, true, now_ms()).await.with_context(|| format!("demo account {username}"))?;
    Ok((username.to_owned(), password, customer_id))
}

/// A gateway key for this run, in a key file of its own under the temporary directory.
fn demo_key() -> anyhow::Result<(String, Arc<auth_ingest::keys::KeyRing>)> {
    let path = std::env::temp_dir().join(format!("auth-up-{}", std::process::id())).join("keys.json");
    let _ = std::fs::remove_file(&path);
    let (key, _) = auth_ingest::keys::create_key(&path, "auth up demo", &[], now_ms())?;
    Ok((key, crate::ingest::key_ring(&path)?))
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            if let Err(err) = result {
                tracing::warn!(error = %err, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C: shutting down");
        }
        () = terminated() => tracing::info!("SIGTERM: shutting down"),
    }
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}
