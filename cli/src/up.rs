//! `auth up`: simulator and ingest gateway -> embedded log -> stream
//! processor -> in-memory serving store -> API, in one process (on Kafka and
//! Redis when the spec or the flags name them); the archiver keeps the log's
//! readings as master data in a local directory, and the batch recomputes the
//! last days from it on a short schedule and restates the serving store.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use auth_adapters::Embedded;
use auth_api::AppState;
use auth_core::{CustomerKind, Utility, now_ms};
use auth_ingest::gateway::Gateway;
use auth_ingest::{LogSink, SinkError, Simulator, run_paced};
use auth_master::archiver::Archiver;
use auth_runtime::http::HttpLimits;
use auth_stream::{Processor, ProcessorConfig};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::common::CommonArgs;

/// Kafka and Redis replace the embedded log and store when the flags or the spec name them.
#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of the API and dashboard.
    #[arg(long, env = "AUTH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the ingest gateway (`POST /api/v1/readings`).
    #[arg(long, env = "AUTH_INGEST_LISTEN", default_value = "127.0.0.1:8088")]
    ingest_listen: SocketAddr,
}

pub async fn run(args: UpArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let spec = args.common.spec()?;
    let pipeline = args.common.pipeline.clone();
    let log = auth_adapters::log(&spec, "up", Embedded::Allowed)?;
    auth_adapters::ensure_topics(log.as_ref(), &spec, &pipeline).await?;
    let store = auth_adapters::store(&spec, &pipeline, "up", Embedded::Allowed).await?;
    let shutdown = auth_runtime::shutdown::on_signals();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen / AUTH_LISTEN)", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let state = AppState::for_pipeline(&spec, &pipeline, Arc::clone(&store), Arc::clone(&log), metrics)
        .await
        .context("batch.databaseUrl (the results database, which holds the accounts)")?;
    // One pool to the results database: the API's accounts and the batch's days.
    let results = state.sessions.database().clone();
    let mut api = tokio::spawn(auth_api::serve(listener, state, shutdown.clone().cancelled_owned()));

    let gateway_listener = tokio::net::TcpListener::bind(args.ingest_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--ingest-listen / AUTH_INGEST_LISTEN)", args.ingest_listen))?;
    let gateway_address = gateway_listener.local_addr().context("reading the bound address")?;
    let (demo_key, keys) = demo_key()?;
    let simulating = spec.simulator.enabled != Some(false);
    // The simulator's meters are registered as a utility registers its own
    // (`auth registry import`), and the registry reaches the gateway over its topic.
    let mut simulator = Simulator::new(&spec.simulator, spec.simulator.start_ms.unwrap_or_else(now_ms));
    // Checked before the archiver writes anything of today.
    let history_of_today =
        if simulating && spec.simulator.start_ms.is_none() { crate::batch::history_of_today(&spec).await.context("today's history")? } else { None };
    if simulating && !spec.ingest.trust_readings {
        let fleet = simulator.fleet().registry(crate::registry::SIMULATED_INTERVAL_SECS);
        crate::registry::import(&results, &spec, &pipeline, &fleet, false).await.context("registering the simulated fleet")?;
    }
    let registry_topic = auth_core::registry_topic(&pipeline);
    let published = crate::registry::publish_changes(&results, log.producer()?.as_ref(), &registry_topic, 0).await?;
    let mut publisher = tokio::spawn(crate::registry::publish(
        results.clone(),
        log.producer()?,
        registry_topic,
        published,
        shutdown.clone().cancelled_owned(),
    ));
    let (registry, follower) = crate::registry::follow(&log, &spec, &pipeline, "up", shutdown.clone().cancelled_owned());
    let follower_stop = shutdown.clone().cancelled_owned();
    let mut follower = tokio::spawn(async move {
        match follower {
            Some(follower) => follower.await.context("registry task")?.context("following the meter registry topic"),
            None => {
                follower_stop.await;
                Ok(())
            }
        }
    });
    if !spec.ingest.trust_readings {
        tokio::select! {
            () = registry.ready() => {}
            ended = &mut follower => {
                ended.context("registry task")??;
                anyhow::bail!("the meter registry reader stopped before it read the registry");
            }
        }
    }
    let gateway = Gateway::new(log.producer()?, &pipeline, &spec, keys, registry);
    let mut ingest = tokio::spawn(auth_runtime::http::serve(
        gateway_listener,
        gateway.router(),
        HttpLimits::default(),
        shutdown.clone().cancelled_owned(),
    ));

    let processor = Processor::new(ProcessorConfig::from_spec(&pipeline, &spec), log.as_ref(), Arc::clone(&store))?;
    let mut stream = tokio::spawn(processor.run(Arc::clone(&log), shutdown.clone()));

    let master = auth_master::MasterStore::open(&spec.archive.url).context("archive.url")?;
    let mut archiver = Archiver::join(master.clone(), log.as_ref(), &pipeline, &spec)?;
    let (archive_log, archive_stop) = (Arc::clone(&log), shutdown.clone());
    let mut archive = tokio::spawn(async move { archiver.run(archive_log.as_ref(), &archive_stop).await });
    let mut batch = {
        let (spec, pipeline, store, master) = (spec.clone(), pipeline.clone(), Arc::clone(&store), master.clone());
        let log = Arc::clone(&log);
        let (results, stop) = (auth_batch::ResultsDb::of(results.clone()), shutdown.clone());
        tokio::spawn(async move {
            crate::batch::backfill_history(&spec).await?;
            auth_batch::schedule::run(&spec, &pipeline, master, store.as_ref(), log.as_ref(), &results, &stop).await.context("scheduled batch")
        })
    };

    let first_residential = simulator.fleet().meters().iter().find(|m| m.customer_kind == CustomerKind::Residential);
    let first_business = simulator.fleet().meters().iter().find(|m| m.customer_kind == CustomerKind::Business);
    let with_gas = simulator.fleet().meters().iter().find(|m| m.utility == Utility::Gas);
    let mut sink = LogSink::new(log.producer()?, &pipeline, spec.log.partitions);
    let simulator_spec = spec.simulator.clone();
    let look_at: Vec<String> = [first_residential, first_business, with_gas]
        .into_iter()
        .flatten()
        .filter(|_| simulating)
        .map(|meter| format!("{} ({}{})", meter.customer_id, meter.customer_kind.as_str(), if meter.utility == Utility::Gas { ", has gas" } else { "" }))
        .collect();
    let mut logins = vec![demo_account(&results, "operator", None).await?];
    let mut demo_customers: Vec<u64> =
        [first_residential, first_business, with_gas].into_iter().flatten().filter(|_| simulating).map(|m| m.customer_id).collect();
    demo_customers.dedup();
    for customer_id in demo_customers {
        logins.push(demo_account(&results, &format!("customer-{customer_id}"), Some(customer_id)).await?);
    }
    let (simulation_stop, history_stop) = (shutdown.clone().cancelled_owned(), shutdown.clone().cancelled_owned());
    let mut simulation = tokio::spawn(async move {
        if !simulating {
            simulation_stop.await;
            return Ok(0);
        }
        let mut sent = 0;
        if let Some((mut history, history_spec)) = history_of_today {
            // Today so far first, as fast as it goes: the heartbeats that end by the
            // live start (a heartbeat's readings spread over it), so that no
            // reading is ahead of the clock. The live readings go on from there,
            // behind the clock by as long as this took.
            let until_ms = simulator.event_time_ms() - i64::from(history_spec.heartbeat_secs) * 1_000 + 1;
            sent = run_paced(&mut history, &mut sink, &history_spec, Some(until_ms), history_stop).await?;
            tracing::info!(readings = sent, "today's history so far sent through the log");
        }
        Ok::<u64, SinkError>(sent + run_paced(&mut simulator, &mut sink, &simulator_spec, None, simulation_stop).await?)
    });

    if simulating {
        println!("AUTH is up: {} simulated customers, pipeline `{pipeline}`.", spec.simulator.customers);
    } else {
        println!("AUTH is up without the simulator (simulator.enabled: false), pipeline `{pipeline}`.");
    }
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
    if simulating {
        println!("  customers to look at: {}", look_at.join(", "));
    } else {
        println!("  customers to look at: none yet: register your meters (auth registry import FILE, same --config), then POST their readings");
    }
    println!("Press Ctrl-C to stop.");

    // Biased: the tasks stop once the token is cancelled, so a task that
    // ended after a signal is a shutdown, not an early exit.
    let early_exit = tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        result = &mut stream => Some(("stream processor", result.map(|r| r.map_err(anyhow::Error::from)))),
        result = &mut simulation => Some(("simulator", result.map(|r| r.map(drop).map_err(anyhow::Error::from)))),
        result = &mut api => Some(("API server", result.map(|r| r.map_err(anyhow::Error::from)))),
        result = &mut ingest => Some(("ingest gateway", result.map(|r| r.map_err(anyhow::Error::from)))),
        result = &mut archive => Some(("archiver", result.map(|r| r.map(drop).map_err(anyhow::Error::from)))),
        result = &mut batch => Some(("batch", result)),
        result = &mut publisher => Some(("registry publisher", result)),
        result = &mut follower => Some(("registry reader", result)),
    };
    shutdown.cancel();
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
    publisher.await.context("registry publisher task")?.context("registry publisher")?;
    follower.await.context("registry task")?.context("registry reader")?;
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
    let (key, _) = auth_ingest::keys::create_key(&path, "auth up demo", &auth_core::gateway_key::KeyScope::default(), now_ms())?;
    Ok((key, crate::ingest::key_ring(std::slice::from_ref(&path))?))
}
