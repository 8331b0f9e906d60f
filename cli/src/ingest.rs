//! `auth ingest`: the gateway, HTTP (and MQTT with `--mqtt`) into Kafka; and `auth keys`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use auth_ingest::gateway::Gateway;
use auth_ingest::keys::{self, KeyRing};
use auth_runtime::http::HttpLimits;
use clap::{Args, Subcommand};
use auth_adapters::Embedded;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::common::CommonArgs;

/// Readings go to the topics `<pipeline>.<utility>`, refused ones to
/// `<pipeline>.dlq`; limits come from the spec's `ingest` section.
#[derive(Args)]
pub struct IngestArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address of `POST /api/v1/readings`.
    #[arg(long, env = "AUTH_INGEST_LISTEN", default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// Gateway key files (argon2 hashes), as `auth keys create` writes them;
    /// several separated by commas, their keys together.
    #[arg(long, env = "AUTH_INGEST_KEYS", default_value = "auth-keys.json", value_delimiter = ',')]
    keys_file: Vec<PathBuf>,
    /// Also take readings from an MQTT broker, `mqtt://host:port` (topic `meters/+/readings`, QoS 1).
    #[arg(long, env = "AUTH_MQTT_URL")]
    mqtt: Option<String>,
    /// The gateway's MQTT login: a subscriber key (`auth keys create --mqtt-subscriber`);
    /// without it the gateway connects anonymously (a development broker only).
    #[arg(long, env = "AUTH_MQTT_KEY", hide_env_values = true)]
    mqtt_key: Option<String>,
    /// For an `mqtts://` broker: the CA certificate (PEM) that signed the broker's certificate.
    #[arg(long, env = "AUTH_MQTT_CA")]
    mqtt_ca: Option<PathBuf>,
    /// MQTT client id: names the broker session that keeps messages while the gateway is away
    /// (default: derived from --mqtt-key, unguessable without it; else `auth-ingest-<pipeline>`).
    #[arg(long, env = "AUTH_MQTT_CLIENT_ID")]
    mqtt_client_id: Option<String>,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "AUTH_METRICS_LISTEN", default_value = "127.0.0.1:9466")]
    metrics_listen: SocketAddr,
}

#[derive(Args)]
pub struct KeysArgs {
    /// The key file the gateway reads.
    #[arg(long, env = "AUTH_INGEST_KEYS", default_value = "auth-keys.json", global = true)]
    keys_file: PathBuf,
    /// On Kubernetes: the key file in this Secret instead (key `auth-keys.json`;
    /// the gateway's is `<pipeline>-gateway-keys`), created when missing.
    /// Running gateways see a change once the kubelet updates their volume (about a minute).
    #[arg(long, global = true)]
    secret: Option<String>,
    /// The Secret's namespace (default: the kubeconfig's).
    #[arg(long, global = true, requires = "secret")]
    namespace: Option<String>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issues a key and prints it (once: only its hash is stored).
    Create {
        /// Who uses the key, e.g. a concentrator's name.
        #[arg(long)]
        name: String,
        /// Regions the key may send readings for (ISO 3166-2, e.g. US-CA); every region when absent.
        #[arg(long = "region")]
        regions: Vec<String>,
        /// Meters the key may send readings for: an id or a range, e.g. `--meter 7 --meter 100-199`; every meter when absent.
        #[arg(long = "meter")]
        meters: Vec<String>,
        /// A key for the gateway's own MQTT session (`auth ingest --mqtt-key`): it reads every
        /// meter's topic and sends no readings.
        #[arg(long, conflicts_with_all = ["regions", "meters"])]
        mqtt_subscriber: bool,
    },
    /// Writes Mosquitto's password file and ACL file for the keys: each key logs
    /// in as its id with the key as password and may publish only to its meters'
    /// topics (`meters/<id>/readings`). Mosquitto reads them again on SIGHUP.
    Mosquitto {
        #[arg(long)]
        password_file: PathBuf,
        #[arg(long)]
        acl_file: PathBuf,
        /// Pipeline spec naming the results database, whose registry gives the meters of region-scoped keys.
        #[arg(long, env = "AUTH_CONFIG")]
        config: Option<PathBuf>,
        /// The results database instead of the spec's `batch.databaseUrl`.
        #[arg(long, env = "AUTH_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Lists the keys (ids, names, meters and regions; never the keys).
    List,
    /// Revokes a key by id; a running gateway refuses it from then on.
    Revoke { id: String },
}

/// `auth keys`: on the key file, or with `--secret` on the Secret's.
pub fn keys(args: KeysArgs) -> anyhow::Result<()> {
    match args.secret.clone() {
        Some(secret) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(keys_in_secret(args, secret))
        }
        None => keys_in_file(args),
    }
}

/// `auth keys --secret`: the same edit on the Secret's key file, through a
/// private copy, written back only when it changed.
async fn keys_in_secret(args: KeysArgs, secret: String) -> anyhow::Result<()> {
    let client = auth_operator::Client::try_default()
        .await
        .context("connecting to Kubernetes for --secret (KUBECONFIG or ~/.kube/config)")?;
    let keys = auth_operator::key_secret::KeySecret::new(client, args.namespace.as_deref(), &secret);
    let read = keys.read().await.with_context(|| format!("reading the Secret {secret}"))?;
    let copy = tempfile::tempdir().context("a private directory for the key file")?;
    let path = copy.path().join("auth-keys.json");
    if let Some(bytes) = &read.key_file {
        std::fs::write(&path, bytes).context("copying the Secret's key file")?;
    }
    let before = read.key_file.clone();
    keys_in_file(KeysArgs { keys_file: path.clone(), ..args }).with_context(|| format!("the key file in the Secret {secret}"))?;
    let after = std::fs::read(&path).ok();
    if let Some(after) = after.filter(|after| Some(after) != before.as_ref()) {
        keys.write(read, after).await.with_context(|| format!("writing the Secret {secret} (run the command again if it changed meanwhile)"))?;
        eprintln!("Secret {} updated; running gateways load it when the kubelet refreshes their volume", keys.name());
    }
    Ok(())
}

fn keys_in_file(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Create { name, regions, meters, mqtt_subscriber } => {
            let scope = keys::KeyScope { regions, meters, subscriber: mqtt_subscriber };
            let (key, record) = keys::create_key(&args.keys_file, &name, &scope, auth_core::now_ms())?;
            eprintln!(
                "key {} for `{}` ({}) stored hashed in {}; it is shown only now:",
                record.id,
                record.name,
                scope_text(&record),
                args.secret.as_deref().map_or_else(|| args.keys_file.display().to_string(), |secret| format!("the Secret {secret}"))
            );
            println!("{key}");
        }
        KeysCommand::List => {
            for record in keys::list_keys(&args.keys_file)? {
                println!("{}\t{}\t{}", record.id, record.name, scope_text(&record));
            }
        }
        KeysCommand::Mosquitto { password_file, acl_file, config, database_url } => {
            let records = keys::list_keys(&args.keys_file)?;
            let registry = if records.iter().any(|record| !record.regions.is_empty()) {
                let mut spec = crate::common::load_spec(config.as_deref())?;
                if let Some(url) = database_url {
                    spec.batch.database_url = url;
                }
                let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
                Some(runtime.block_on(async {
                    let db = auth_results::Database::connect(&spec.batch.database_url).await.context("batch.databaseUrl / --database-url")?;
                    db.registry().await.context("reading the meter registry")
                })?)
            } else {
                None
            };
            let files = keys::mosquitto_files(&records, registry.as_ref())?;
            write_private(&password_file, &files.passwords)?;
            write_private(&acl_file, &files.acl)?;
            for id in &files.skipped {
                eprintln!("key {id} was issued before MQTT credentials and is left out: issue a new key for MQTT");
            }
            println!(
                "wrote {} MQTT logins to {} and their topics to {}; send Mosquitto SIGHUP to load them",
                records.len() - files.skipped.len(),
                password_file.display(),
                acl_file.display()
            );
        }
        KeysCommand::Revoke { id } => {
            let record = keys::revoke_key(&args.keys_file, &id)?;
            println!("revoked key {} ({})", record.id, record.name);
        }
    }
    Ok(())
}

/// The CA certificate (PEM) of a TLS broker, from `path`.
pub fn read_ca(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the MQTT broker's CA certificate {} (--mqtt-ca)", path.display()))
}

/// Writes a file only its owner may read (it holds password hashes).
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}

/// A key's meters and regions in words.
fn scope_text(record: &auth_core::gateway_key::KeyRecord) -> String {
    if record.subscriber {
        return "the gateway's MQTT session: reads every meter's topic, sends no readings".to_owned();
    }
    let meters = if record.meters.is_empty() { "every meter".to_owned() } else { format!("meters {}", record.meters.join(",")) };
    let regions = if record.regions.is_empty() { "every region".to_owned() } else { format!("regions {}", record.regions.join(",")) };
    format!("{meters} of {regions}")
}

/// Loads the key files; a gateway without any key would refuse everything, so that is an error.
pub fn key_ring(paths: &[PathBuf]) -> anyhow::Result<Arc<KeyRing>> {
    let ring = KeyRing::load(paths).with_context(|| "--keys-file / AUTH_INGEST_KEYS")?;
    anyhow::ensure!(
        !ring.is_empty(),
        "no gateway key in {} (--keys-file / AUTH_INGEST_KEYS): create one with `auth keys create --name <who>`",
        paths.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(Arc::new(ring))
}

pub async fn run(args: IngestArgs, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let spec = args.common.spec()?;
    let pipeline = &args.common.pipeline;
    let log = auth_adapters::log(&spec, "ingest", Embedded::Refused)?;
    auth_adapters::ensure_topics(log.as_ref(), &spec, pipeline).await?;
    let keys = key_ring(&args.keys_file)?;
    let mqtt_client_id = args.mqtt_client_id.clone().unwrap_or_else(|| match &args.mqtt_key {
        Some(key) => auth_ingest::mqtt::session_id(pipeline, key),
        None => format!("auth-ingest-{pipeline}"),
    });
    let mqtt_ca = args.mqtt_ca.as_deref().map(read_ca).transpose()?;
    if let Some(url) = &args.mqtt {
        auth_ingest::mqtt::options(url, &mqtt_client_id, 0, mqtt_ca.as_deref()).context("--mqtt / AUTH_MQTT_URL, --mqtt-ca / AUTH_MQTT_CA")?;
    }
    let shutdown = auth_runtime::shutdown::on_signals();
    let (registry, mut follower) = crate::registry::follow(&log, &spec, pipeline, "ingest", shutdown.clone().cancelled_owned());
    let gateway = Gateway::new(log.producer()?, pipeline, &spec, keys, registry);
    let metrics_server = auth_runtime::telemetry::serve_metrics(args.metrics_listen, metrics, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen / AUTH_INGEST_LISTEN)", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%address, %pipeline, "ingest gateway serving POST /api/v1/readings");
    let mut http = tokio::spawn(auth_runtime::http::serve(
        listener,
        gateway.router(),
        HttpLimits::default(),
        shutdown.clone().cancelled_owned(),
    ));
    let mqtt = args.mqtt.clone().map(|url| {
        let (gateway, stop) = (gateway.clone(), shutdown.clone().cancelled_owned());
        let login = auth_ingest::mqtt::BrokerLogin {
            url,
            client_id: mqtt_client_id.clone(),
            key: args.mqtt_key.clone(),
            ca_pem: mqtt_ca.clone(),
        };
        tokio::spawn(auth_ingest::mqtt::run(gateway, login, stop))
    });
    let registry_ended = async {
        match follower.as_mut() {
            Some(follower) => follower.await,
            None => std::future::pending().await,
        }
    };
    let http_ended = tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        ended = &mut http => Some(ended),
        ended = registry_ended => {
            shutdown.cancel();
            ended.context("registry task")?.context("following the meter registry topic")?;
            anyhow::bail!("the meter registry reader stopped on its own");
        }
    };
    shutdown.cancel();
    match http_ended {
        Some(ended) => ended.context("HTTP server task")?.context("HTTP server")?,
        None => http.await.context("HTTP server task")?.context("HTTP server")?,
    }
    if let Some(mqtt) = mqtt {
        mqtt.await.context("MQTT task")?.context("MQTT ingest")?;
    }
    if let Some(follower) = follower {
        follower.await.context("registry task")?.context("following the meter registry topic")?;
    }
    metrics_server.await.context("metrics server task")??;
    tracing::info!("ingest gateway stopped cleanly");
    Ok(())
}
