//! `auth bench api`: `GET /api/v1/customers/{id}/usage` (the customer view's
//! live query) served from Redis, loaded by `wrk` over loopback with a bearer
//! token, against `redis-benchmark` GETs on the same Redis in the same run.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use auth_api::{AppState, LoginLimits, PipelineProbe, Sessions};
use auth_core::ports::{Aggregate, PartitionFlush, ServingStore, TopicPartition, WindowOwner, WindowSlot, WindowUpdate};
use auth_core::spec::PipelineSpec;
use auth_core::{Utility, partition_for};
use auth_embedded::{EmbeddedLog, Retention};
use auth_results::accounts::TokenKind;
use auth_results::{Database, Role};
use serde_json::json;

use crate::Servers;

pub struct ApiBench {
    pub customers: u64,
    pub connections: u32,
    pub seconds: u32,
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const PARTITIONS: u32 = 6;

/// The server runs on both cores' worth of threads; wrk and Redis share them, as on one API node.
pub fn run(bench: &ApiBench, servers: &Servers, keep: bool) -> anyhow::Result<serde_json::Value> {
    for tool in ["wrk", "redis-benchmark"] {
        anyhow::ensure!(
            Command::new(tool).arg("--version").output().is_ok(),
            "`{tool}` is not installed (Debian packages wrk and redis-tools; scripts/services.sh build-deps installs them)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the runtime")?;
    runtime.block_on(measure(bench, servers, keep))
}

/// One customer's windows as the stream leaves them: the last hour's minutes,
/// the last day's hours and today, the newest of each size still open.
fn customer_windows(customer_id: u64, now_ms: i64) -> Vec<WindowUpdate> {
    let window = |width_ms: i64, back: i64| WindowUpdate {
        owner: WindowOwner::Customer(customer_id),
        utility: Utility::Electricity,
        slot: WindowSlot { width_ms, start_ms: (now_ms.div_euclid(width_ms) - back) * width_ms },
        aggregate: Aggregate { sum: 12.5, count: 12, min: 0.5, max: 2.0 },
        closed: back > 0,
    };
    let mut windows: Vec<WindowUpdate> = (0..60).map(|back| window(MINUTE_MS, back)).collect();
    windows.extend((0..24).map(|back| window(HOUR_MS, back)));
    windows.push(window(DAY_MS, 0));
    windows
}

async fn measure(bench: &ApiBench, servers: &Servers, keep: bool) -> anyhow::Result<serde_json::Value> {
    let mut spec = PipelineSpec::default();
    spec.serving.url = Some("redis://127.0.0.1:6379".into());
    let spec = servers.apply(spec)?;
    let redis_url = spec.serving.url.clone().unwrap_or_default();
    let pipeline = format!("bench-api-{}", auth_core::now_ms());
    let store = Arc::new(auth_redis::RedisStore::connect(&redis_url, &pipeline, spec.serving.recent_windows, &spec.windows.effective_sizes_ms()).await?);

    let now = auth_core::now_ms();
    let mut flushes: Vec<Vec<WindowUpdate>> = vec![Vec::new(); PARTITIONS as usize];
    for customer_id in 1..=bench.customers {
        flushes[partition_for(customer_id, PARTITIONS) as usize].extend(customer_windows(customer_id, now));
    }
    for (partition, windows) in flushes.into_iter().enumerate() {
        for chunk in windows.chunks(100_000) {
            let flush = PartitionFlush { partition: TopicPartition::new("bench.electricity", partition as u32), epoch: None, windows: chunk.to_vec(), meters: Vec::new(), checkpoint: None };
            store.apply(flush).await.context("loading windows into Redis")?;
        }
    }
    println!("api: {} customers' windows (60 minutes, 24 hours, 1 day each) in Redis", bench.customers);

    let directory = tempfile::tempdir().context("temporary directory")?;
    let db = Database::connect(&format!("sqlite://{}", directory.path().join("results.db").display())).await?;
    db.add_account("bench", "bench password", Role::Operator, None, false, now).await?;
    let token = db.issue_token("bench", TokenKind::Bearer, DAY_MS, now).await?;
    let log = Arc::new(EmbeddedLog::new(Retention { max_age: Duration::from_secs(60), max_bytes_per_partition: 1 << 20 }));
    let state = AppState::new(
        Arc::clone(&store) as Arc<dyn ServingStore>,
        Arc::new(Sessions::new(db, LoginLimits::default())),
        Arc::new(PipelineProbe::new(log, Vec::new())),
        metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the API")?;
    let address = listener.local_addr()?;
    let stop = auth_runtime::CancellationToken::new();
    let server = tokio::spawn(auth_api::serve(listener, state, stop.clone().cancelled_owned()));

    let script = directory.path().join("customers.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n\
             request = function()\n  return wrk.format(\"GET\", \"/api/v1/customers/\" .. math.random(1, {}) .. \"/usage?granularity=minute\")\nend\n\
             done = function(summary, latency, requests)\n  io.write(string.format(\"RESULT %d %d %d %d %d\\n\", summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n",
            bench.customers
        ),
    )?;
    let url = format!("http://{address}/");
    let wrk = |seconds: u32| {
        let script = script.clone();
        let url = url.clone();
        let connections = bench.connections;
        tokio::task::spawn_blocking(move || {
            Command::new("wrk")
                .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "-s"])
                .arg(&script)
                .arg(&url)
                .output()
        })
    };
    wrk(2).await?.context("running wrk (warm-up)")?;
    let output = wrk(bench.seconds).await?.context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let result: Vec<f64> = text
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .with_context(|| format!("wrk printed no result: {text}{}", String::from_utf8_lossy(&output.stderr)))?
        .split_whitespace()
        .filter_map(|number| number.parse().ok())
        .collect();
    let [requests, duration_us, p50_us, p99_us, errors] = result[..] else { anyhow::bail!("wrk's result line: {text}") };
    anyhow::ensure!(errors == 0.0, "{errors} requests failed or were not 200: {text}");
    let api_rps = requests / (duration_us / 1e6);
    println!("api: {requests} requests in {:.1} s over {} connections: {api_rps:.0}/s, p50 {:.3} ms, p99 {:.3} ms", duration_us / 1e6, bench.connections, p50_us / 1e3, p99_us / 1e3);

    let (host, port) = redis_host_port(&redis_url);
    let reference = Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port, "-t", "get", "-n", "400000", "-c", &bench.connections.to_string(), "--csv"])
        .output()
        .context("running redis-benchmark")?;
    let csv = String::from_utf8_lossy(&reference.stdout).into_owned();
    let row: Vec<f64> = csv
        .lines()
        .find(|line| line.starts_with("\"GET\""))
        .with_context(|| format!("redis-benchmark printed no GET row: {csv}"))?
        .split(',')
        .skip(1)
        .filter_map(|cell| cell.trim_matches('"').parse().ok())
        .collect();
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let (redis_rps, redis_p50_ms, redis_p99_ms) = (row[0], row[3], row[5]);
    println!("redis-benchmark GET, {} connections: {redis_rps:.0}/s, p50 {redis_p50_ms:.3} ms, p99 {redis_p99_ms:.3} ms", bench.connections);

    stop.cancel();
    server.await.context("API task")??;
    if !keep {
        store.delete_namespace().await?;
    }
    let round = |value: f64| (value * 1000.0).round() / 1000.0;
    Ok(json!({
        "bench": "api",
        "customers": bench.customers,
        "connections": bench.connections,
        "requests": requests,
        "requests_per_sec": api_rps.round(),
        "p50_ms": round(p50_us / 1e3),
        "p99_ms": round(p99_us / 1e3),
        "redis_get_requests_per_sec": redis_rps.round(),
        "redis_get_p50_ms": redis_p50_ms,
        "redis_get_p99_ms": redis_p99_ms,
        "rps_vs_redis_get": round(api_rps / redis_rps),
        "p99_vs_redis_get": round(p99_us / 1e3 / redis_p99_ms),
    }))
}

fn redis_host_port(url: &str) -> (String, String) {
    let address = url.trim_start_matches("redis://").split(['/', '?']).next().unwrap_or("127.0.0.1:6379");
    let address = address.rsplit('@').next().unwrap_or(address);
    match address.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.to_owned()),
        None => (address.to_owned(), "6379".to_owned()),
    }
}
