//! `auth bench ingest`: readings through the HTTP gateway into Kafka, against
//! the simulator writing the same readings to Kafka directly in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use auth_core::ports::ReadingLog;
use auth_core::spec::{PipelineSpec, SimulatorMode};
use auth_core::{Utility, dead_letter_topic, utility_topic};
use auth_ingest::gateway::Gateway;
use auth_ingest::keys::{self, KeyRing};
use auth_ingest::{LogSink, ReadingSink, Simulator, edge_json};
use serde_json::json;

use crate::Servers;
use crate::per_sec;

pub struct IngestBench {
    pub readings: usize,
    pub batch: usize,
    pub connections: usize,
    pub customers: u64,
}

fn percentile_ms(sorted: &[Duration], percentile: f64) -> f64 {
    let index = ((sorted.len() as f64 * percentile).ceil() as usize).clamp(1, sorted.len()) - 1;
    (sorted[index].as_secs_f64() * 1e5).round() / 100.0
}

/// Runs on two worker threads: the gateway and its clients share the machine, as on a gateway node.
pub fn run(bench: &IngestBench, servers: &Servers, keep: bool) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(measure(bench, servers, keep))
}

async fn measure(bench: &IngestBench, servers: &Servers, keep: bool) -> anyhow::Result<serde_json::Value> {
    let mut spec = PipelineSpec::default();
    spec.log.url = Some("kafka://127.0.0.1:9092".into());
    spec.log.retention_bytes = 1 << 40;
    spec.simulator.customers = bench.customers;
    spec.simulator.mode = SimulatorMode::AsFastAsPossible;
    spec.ingest.max_readings_per_request = bench.batch.max(1) as u32;
    spec.ingest.max_in_flight_readings = spec.ingest.max_in_flight_readings.max(spec.ingest.max_readings_per_request);
    let spec = servers.apply(spec)?;
    let kafka_url = spec.log.url.clone().unwrap_or_default();
    let pipeline = format!("bench-ingest-{}", auth_core::now_ms());
    let log = Arc::new(auth_kafka::KafkaLog::connect(&kafka_url, auth_kafka::TopicSettings::from_spec(&spec.log))?);
    auth_adapters::ensure_topics(log.as_ref(), &spec, &pipeline).await?;

    let mut simulator = Simulator::new(&spec.simulator, auth_core::now_ms() - 86_400_000);
    let mut items = Vec::with_capacity(bench.readings);
    simulator.fill(&mut items, bench.readings);

    let started = Instant::now();
    let mut sink = LogSink::new(log.producer()?, &pipeline, spec.log.partitions);
    for chunk in items.chunks(50_000) {
        sink.write(chunk).await?;
    }
    let direct_time = started.elapsed();
    println!("ingest: the simulator wrote {} readings to Kafka directly at {} readings/s", items.len(), per_sec(items.len(), direct_time));

    let bodies: Vec<bytes::Bytes> = items
        .chunks(bench.batch.max(1))
        .map(|chunk| serde_json::to_vec(&chunk.iter().map(edge_json).collect::<Vec<_>>()).map(bytes::Bytes::from))
        .collect::<Result<_, _>>()?;
    let keys_dir = std::env::temp_dir().join(format!("auth-bench-ingest-{}", std::process::id()));
    let keys_path = keys_dir.join("keys.json");
    let (key, _) = keys::create_key(&keys_path, "bench", &auth_core::gateway_key::KeyScope::default(), auth_core::now_ms())?;
    let ring = Arc::new(KeyRing::load(std::slice::from_ref(&keys_path))?);
    let registry = auth_ingest::registry_feed::LiveRegistry::fixed(simulator.fleet().registry(spec.simulator.heartbeat_secs));
    let gateway = Gateway::new(log.producer()?, &pipeline, &spec, ring, registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the gateway")?;
    let url = format!("http://{}/api/v1/readings", listener.local_addr()?);
    let server = tokio::spawn(axum::serve(listener, gateway.router()).into_future());

    let client = reqwest::Client::builder().pool_max_idle_per_host(bench.connections).build()?;
    // The first request checks the key with argon2; it is not part of the measurement.
    let warmup = client.post(&url).bearer_auth(&key).body("[]").send().await?;
    anyhow::ensure!(warmup.status().as_u16() == 400, "the gateway refused the key: {}", warmup.status());

    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..bench.connections.max(1) {
        let (client, url, key, bodies, next) = (client.clone(), url.clone(), key.clone(), Arc::clone(&bodies), Arc::clone(&next));
        clients.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(index) else { return Ok::<_, anyhow::Error>(latencies) };
                let sent = Instant::now();
                let response = client.post(&url).bearer_auth(&key).body(body.clone()).send().await?;
                let status = response.status().as_u16();
                let answer = response.bytes().await?;
                anyhow::ensure!(status == 202, "the gateway answered {status}: {}", String::from_utf8_lossy(&answer));
                latencies.push(sent.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(bodies.len());
    while let Some(done) = clients.join_next().await {
        latencies.extend(done.context("client task")??);
    }
    let gateway_time = started.elapsed();
    server.abort();
    latencies.sort_unstable();
    let stored: u64 = {
        let mut total = 0;
        for &utility in &spec.utilities {
            total += log.end_offsets(&utility_topic(&pipeline, utility))
                .await?
                .iter()
                .sum::<u64>();
        }
        total
    };
    anyhow::ensure!(stored == 2 * items.len() as u64, "the topics hold {stored} records, expected {}", 2 * items.len());
    let gateway_rate = per_sec(items.len(), gateway_time);
    let direct_rate = per_sec(items.len(), direct_time);
    println!(
        "ingest: through HTTP, {} requests of {} readings on {} connections: {gateway_rate} readings/s, p50 {} ms, p99 {} ms",
        latencies.len(),
        bench.batch,
        bench.connections,
        percentile_ms(&latencies, 0.5),
        percentile_ms(&latencies, 0.99)
    );
    if !keep {
        let dead_letters = dead_letter_topic(&pipeline);
        let topics: Vec<String> = Utility::ALL.iter().map(|&utility| utility_topic(&pipeline, utility)).collect();
        let names: Vec<&str> = topics.iter().map(String::as_str).chain([dead_letters.as_str()]).collect();
        log.delete_topics(&names).await?;
    }
    let _ = std::fs::remove_dir_all(&keys_dir);
    Ok(json!({
        "bench": "ingest",
        "readings": items.len(),
        "batch": bench.batch,
        "connections": bench.connections,
        "customers": bench.customers,
        "readings_per_sec": gateway_rate,
        "requests_per_sec": per_sec(latencies.len(), gateway_time),
        "p50_ms": percentile_ms(&latencies, 0.5),
        "p99_ms": percentile_ms(&latencies, 0.99),
        "direct_readings_per_sec": direct_rate,
        "gateway_vs_direct": (gateway_rate / direct_rate * 100.0).round() / 100.0,
    }))
}
