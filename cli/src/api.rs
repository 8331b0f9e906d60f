//! `auth api`: the HTTP API and dashboard over Redis, Kafka (pipeline health)
//! and the results database; `auth users`: the accounts that log in to it.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use auth_adapters::Embedded;
use auth_api::AppState;
use auth_results::{Database, Role};
use clap::{Args, Subcommand, ValueEnum};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::common::CommonArgs;

#[derive(Args)]
pub struct ApiArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The results database instead of the spec's `batch.databaseUrl`.
    #[arg(long, env = "AUTH_DATABASE_URL")]
    database_url: Option<String>,
    /// Address of the API, the dashboard, `/metrics` and `/healthz`.
    #[arg(long, env = "AUTH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Also serve `/metrics` and `/healthz` here, apart from the API (as every other role does).
    #[arg(long, env = "AUTH_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

pub async fn run(args: ApiArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let mut spec = args.common.spec()?;
    let pipeline = &args.common.pipeline;
    if let Some(url) = args.database_url {
        spec.batch.database_url = url;
    }
    let log = auth_adapters::log(&spec, "api", Embedded::Refused)?;
    let store = auth_adapters::store(&spec, pipeline, "api", Embedded::Refused).await?;
    let producer = log.producer()?;
    let registry_topic = auth_core::registry_topic(pipeline);
    log.ensure_compacted_topic(&registry_topic).await.with_context(|| format!("creating topic {registry_topic}"))?;
    let state = AppState::for_pipeline(&spec, pipeline, store, log, metrics)
        .await
        .context("batch.databaseUrl (the results database, which holds the accounts)")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen / AUTH_LISTEN)", args.listen))?;
    tracing::info!(address = %args.listen, "API serving");
    let shutdown = auth_runtime::shutdown::on_signals();
    // The API's pods publish the meter registry of the results database to the registry topic.
    let registry_publisher = tokio::spawn(crate::registry::publish(
        state.sessions.database().clone(),
        producer,
        registry_topic,
        0,
        shutdown.clone().cancelled_owned(),
    ));
    let metrics_server = match args.metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (--metrics-listen / AUTH_METRICS_LISTEN)"))?;
            tracing::info!(%address, "serving /metrics and /healthz");
            Some(tokio::spawn(auth_api::serve_metrics(listener, state.clone(), shutdown.clone().cancelled_owned())))
        }
        None => None,
    };
    let server = tokio::spawn(auth_api::serve(listener, state, shutdown.clone().cancelled_owned()));
    server.await.context("API task")?.context("API server")?;
    shutdown.cancel();
    registry_publisher.await.context("registry publisher task")?.context("registry publisher")?;
    if let Some(metrics_server) = metrics_server {
        metrics_server.await.context("metrics task")?.context("metrics server")?;
    }
    tracing::info!("API stopped cleanly");
    Ok(())
}

#[derive(Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
    /// Pipeline spec (YAML) naming the results database (`batch.databaseUrl`).
    #[arg(long, env = "AUTH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The results database instead of the spec's `batch.databaseUrl`.
    #[arg(long, env = "AUTH_DATABASE_URL", global = true)]
    database_url: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    /// Sees everything: every customer, the map, top consumers, pipeline health.
    Operator,
    /// Sees one customer's usage (`--customer-id`) and the regions' aggregates.
    Customer,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Creates an account; the password is the first line of standard input.
    Add {
        /// 1 to 64 letters, digits, `.`, `_`, `-`, `@`.
        username: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The customer a customer account belongs to.
        #[arg(long)]
        customer_id: Option<u64>,
        /// Overwrite an account of that name (and end its sessions).
        #[arg(long)]
        replace: bool,
    },
    /// Lists the accounts.
    List,
}

pub async fn users(args: UsersArgs) -> anyhow::Result<()> {
    let mut spec = crate::common::load_spec(args.config.as_deref())?;
    if let Some(url) = args.database_url {
        spec.batch.database_url = url;
    }
    let db = Database::connect(&spec.batch.database_url).await.context("batch.databaseUrl / --database-url")?;
    match args.command {
        UsersCommand::Add { username, role, customer_id, replace } => {
            let mut password = String::new();
            std::io::stdin().lock().read_line(&mut password).context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let role = match role {
                RoleArg::Operator => Role::Operator,
                RoleArg::Customer => Role::Customer,
            };
            let account = db.add_account(&username, password, role, customer_id, replace, auth_core::now_ms()).await?;
            match account.customer_id {
                Some(id) => println!("account {} added: customer {id}", account.username),
                None => println!("account {} added: operator", account.username),
            }
        }
        UsersCommand::List => {
            for account in db.accounts().await? {
                match account.customer_id {
                    Some(id) => println!("{}\tcustomer {id}", account.username),
                    None => println!("{}\toperator", account.username),
                }
            }
        }
    }
    Ok(())
}
