//! `auth-bench <name>`: AUTH's benchmarks, apart from the production binary.
//! Each prints what it does and ends with one JSON line of figures whose
//! names carry their unit.
// A benchmark prints its figures for people and scripts.
#![allow(clippy::print_stdout)]

mod api;
mod batch;
mod ingest;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use auth_core::ports::{LogRecord, PartitionFlush, Polled, ReadingLog, ServingStore, TopicPartition, WindowOwner, WindowSlot, WindowUpdate};
use auth_core::spec::{PipelineSpec, SimulatorMode};
use auth_core::{Reading, ReceiverClock, Utility, codec, dead_letter_topic, utility_topic};
use auth_embedded::{EmbeddedLog, MemoryStore, Retention};
use auth_ingest::{LogSink, ReadingSink, Simulated, Simulator};
use auth_stream::{PartitionWindows, Processor, ProcessorConfig};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 2026-11-28T00:00:00Z: benchmarks use a fixed event time.
const BENCH_START_MS: i64 = 1_795_824_000_000;
const PIPELINE: &str = "bench";

#[derive(Parser)]
#[command(name = "auth-bench", version, about = "AUTH's benchmarks; the last output line is one JSON object with the figures")]
struct BenchArgs {
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "AUTH_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    which: Bench,
}

/// Kafka and Redis instead of the `scripts/services.sh` defaults.
#[derive(Args, Clone, Default)]
pub struct Servers {
    /// Kafka, `kafka://host:port`.
    #[arg(long, env = "AUTH_KAFKA_URL")]
    pub kafka_url: Option<String>,
    /// Redis, `redis://host:port`.
    #[arg(long, env = "AUTH_REDIS_URL")]
    pub redis_url: Option<String>,
}

impl Servers {
    /// The spec with these URLs applied.
    pub fn apply(&self, spec: PipelineSpec) -> anyhow::Result<PipelineSpec> {
        auth_adapters::with_servers(spec, self.kafka_url.as_deref(), self.redis_url.as_deref())
            .map_err(|problems| anyhow::anyhow!("invalid server URL:\n{problems}"))
    }
}

#[derive(Subcommand)]
enum Bench {
    /// Log codec on one core. Figures: decode_readings_per_sec, encode_readings_per_sec,
    /// json_decode_readings_per_sec, decode_vs_json (how many times faster than the JSON edge format).
    Codec {
        #[arg(long, default_value_t = 5_000_000)]
        readings: usize,
    },
    /// Simulator as fast as possible on one core. Figures: readings_per_sec (generated),
    /// encoded_readings_per_sec (generated and encoded for the log).
    Simulate {
        #[arg(long, default_value_t = 20_000_000)]
        readings: usize,
        #[arg(long, default_value_t = 1_000_000)]
        customers: u64,
    },
    /// Window engine on the embedded log on one core, all window sizes, customer and region keys.
    /// Figures: readings_per_sec (log -> processor -> serving store, with flushes and checkpoints),
    /// window_state_readings_per_sec (log -> window state only), baseline_readings_per_sec
    /// (log -> one hash map of per-customer minute sums), time_vs_baseline, ns_per_reading,
    /// bytes_per_window (window state's own heap accounting per open customer window),
    /// rss_bytes_per_window (resident memory growth per open window, allocator overhead included),
    /// open_windows, customers.
    Engine {
        #[arg(long, default_value_t = 10_000_000)]
        readings: usize,
        #[arg(long, default_value_t = 1_000_000)]
        customers: u64,
        #[arg(long, default_value_t = 6)]
        partitions: u32,
    },
    /// Stream processor on Kafka and Redis (from `scripts/services.sh up`): loads a topic set, then
    /// one processor consumes it to the end, windows it, writes Redis and checkpoints.
    /// Figures: readings_per_sec (end to end, from the first record to the final checkpoint),
    /// consume_readings_per_sec (the same records read and decoded by a bare consumer: the
    /// Kafka ceiling), time_vs_consume, produce_readings_per_sec (loading, idempotent acks=all),
    /// redis_commands_per_reading, redis_commands, window_writes_per_reading (window upserts
    /// handed to Redis per reading).
    Kafka {
        #[arg(long, default_value_t = 20_000_000)]
        readings: usize,
        #[arg(long, default_value_t = 100_000)]
        customers: u64,
        #[arg(long, default_value_t = 6)]
        partitions: u32,
        #[command(flatten)]
        servers: Servers,
        /// Keep the topics and Redis keys afterwards (deleted by default).
        #[arg(long)]
        keep: bool,
    },
    /// Ingest gateway on Kafka (from `scripts/services.sh up`): the simulator's readings posted as
    /// JSON arrays over HTTP to an in-process gateway on two threads, acknowledged by Kafka.
    /// Figures: readings_per_sec and requests_per_sec (all requests answered 202), p50_ms and
    /// p99_ms (request latency), direct_readings_per_sec (the same readings written to Kafka by
    /// the simulator in the same run), gateway_vs_direct.
    Ingest {
        #[arg(long, default_value_t = 2_000_000)]
        readings: usize,
        /// Readings per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Concurrent client connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 100_000)]
        customers: u64,
        #[command(flatten)]
        servers: Servers,
        /// Keep the topics afterwards (deleted by default).
        #[arg(long)]
        keep: bool,
    },
    /// The API over Redis (from `scripts/services.sh up`): `GET /api/v1/customers/{id}/usage?granularity=minute`
    /// for random customers with a bearer token, loaded by `wrk` (one thread) over loopback, against
    /// `redis-benchmark` GETs on the same Redis with as many connections in the same run.
    /// Figures: requests_per_sec, p50_ms, p99_ms, redis_get_requests_per_sec, redis_get_p50_ms,
    /// redis_get_p99_ms, rps_vs_redis_get, p99_vs_redis_get.
    Api {
        #[arg(long, default_value_t = 100_000)]
        customers: u64,
        #[arg(long, default_value_t = 32)]
        connections: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        #[command(flatten)]
        servers: Servers,
        /// Keep the Redis keys afterwards (deleted by default).
        #[arg(long)]
        keep: bool,
    },
    /// Serving-store memory on Redis (from `scripts/services.sh up`) at steady state: the simulated
    /// fleet's customers, each with `serving.recentWindows` closed windows and one open window of
    /// every window size and utility it has (as the stream leaves them after weeks of readings),
    /// written through the store's flushes. Figures: customers, windows_per_customer,
    /// bytes_per_customer (growth of Redis' used_memory per customer), window_bytes_per_customer
    /// (41 bytes per window: what the values themselves take), overhead_vs_windows,
    /// projected_gib_at_8m_customers.
    RedisMemory {
        #[arg(long, default_value_t = 20_000)]
        customers: u64,
        #[command(flatten)]
        servers: Servers,
        /// Keep the Redis keys afterwards (deleted by default).
        #[arg(long)]
        keep: bool,
    },
    /// The batch job's three aggregations (daily per customer and utility; hourly per region and
    /// utility; top 10 customers per region and utility) over one simulated day of master data
    /// (written once by `auth simulate --backfill` and reused), against DuckDB and Polars (pip) on
    /// the same files, results checked equal; then the whole daily job. Uses every core.
    /// Figures: auth_seconds, duckdb_seconds, polars_seconds, time_vs_duckdb, time_vs_polars,
    /// peak_rss_bytes (this process, after the aggregations), readings_per_sec,
    /// daily_job_seconds (aggregations, SQLite writes, restatement of an in-memory store).
    Batch {
        #[arg(long, default_value_t = 100_000_000)]
        readings: u64,
        /// Folder of the master data (default ~/.cache/auth/bench-batch/<readings>-<partitions>).
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 512 * 1024 * 1024)]
        memory_limit_bytes: u64,
        #[arg(long, default_value_t = 6)]
        partitions: u32,
        /// Only the batch, without DuckDB and Polars.
        #[arg(long)]
        skip_reference: bool,
        /// Registers one more electricity meter, which never reads, for this share of
        /// the customers: their days need the estimation's profiles, and are folded twice.
        #[arg(long, default_value_t = 0.0)]
        silent_meter_share: f64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = BenchArgs::parse();
    auth_runtime::telemetry::init(&args.log)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let figures = match args.which {
        Bench::Codec { readings } => codec_bench(readings),
        Bench::Simulate { readings, customers } => simulate_bench(readings, customers),
        Bench::Engine { readings, customers, partitions } => runtime.block_on(engine_bench(readings, customers, partitions))?,
        Bench::Kafka { readings, customers, partitions, servers, keep } => {
            runtime.block_on(kafka_bench(readings, customers, partitions, &servers, keep))?
        }
        Bench::Ingest { readings, batch, connections, customers, servers, keep } => {
            crate::ingest::run(&crate::ingest::IngestBench { readings, batch, connections, customers }, &servers, keep)?
        }
        Bench::Api { customers, connections, seconds, servers, keep } => {
            crate::api::run(&crate::api::ApiBench { customers, connections, seconds }, &servers, keep)?
        }
        Bench::RedisMemory { customers, servers, keep } => runtime.block_on(redis_memory_bench(customers, &servers, keep))?,
        Bench::Batch { readings, data, memory_limit_bytes, partitions, skip_reference, silent_meter_share } => {
            crate::batch::run(&crate::batch::BatchBench { readings, data, memory_limit_bytes, partitions, skip_reference, silent_meter_share })?
        }
    };
    println!("{figures}");
    Ok(())
}

fn per_sec(count: usize, elapsed: Duration) -> f64 {
    (count as f64 / elapsed.as_secs_f64()).round()
}

fn simulated_readings(count: usize, customers: u64) -> Vec<Reading> {
    let mut spec = PipelineSpec::default().simulator;
    spec.customers = customers;
    let mut simulator = Simulator::new(&spec, BENCH_START_MS);
    let mut items = Vec::with_capacity(count);
    simulator.fill(&mut items, count);
    items
        .into_iter()
        .filter_map(|item| match item {
            Simulated::Reading(reading) => Some(reading),
            Simulated::Garbage { .. } => None,
        })
        .collect()
}

fn codec_bench(count: usize) -> serde_json::Value {
    let readings = simulated_readings(count, 100_000);
    let mut encoded = Vec::with_capacity(readings.len() * codec::ENCODED_LEN);
    let started = Instant::now();
    for reading in &readings {
        codec::encode_into(reading, &mut encoded);
    }
    let encode = started.elapsed();
    let started = Instant::now();
    let mut total = 0.0;
    for record in encoded.chunks_exact(codec::ENCODED_LEN) {
        if let Ok(reading) = codec::decode(black_box(record)) {
            total += reading.value;
        }
    }
    black_box(total);
    let decode = started.elapsed();
    let json_count = readings.len() / 10;
    let json: Vec<String> = readings[..json_count].iter().map(|reading| reading.to_json().to_string()).collect();
    let started = Instant::now();
    for text in &json {
        let value: serde_json::Value = serde_json::from_str(black_box(text)).unwrap_or_default();
        black_box(Reading::from_json(&value, ReceiverClock::new(BENCH_START_MS, 3_600_000)).ok());
    }
    let json_decode = started.elapsed();
    println!("codec: {} readings, {} bytes each", readings.len(), codec::ENCODED_LEN);
    let decode_rate = per_sec(readings.len(), decode);
    let json_rate = per_sec(json_count, json_decode);
    json!({
        "bench": "codec",
        "readings": readings.len(),
        "decode_readings_per_sec": decode_rate,
        "encode_readings_per_sec": per_sec(readings.len(), encode),
        "json_decode_readings_per_sec": json_rate,
        "decode_vs_json": (decode_rate / json_rate * 10.0).round() / 10.0,
    })
}

fn simulate_bench(count: usize, customers: u64) -> serde_json::Value {
    let mut spec = PipelineSpec::default().simulator;
    spec.customers = customers;
    spec.mode = SimulatorMode::AsFastAsPossible;
    let started = Instant::now();
    let mut simulator = Simulator::new(&spec, BENCH_START_MS);
    let fleet_setup = started.elapsed();
    let mut batch = Vec::with_capacity(65_536);
    let started = Instant::now();
    let mut produced = 0;
    while produced < count {
        batch.clear();
        simulator.fill(&mut batch, 65_536.min(count - produced));
        produced += batch.len();
        black_box(&batch);
    }
    let generate = started.elapsed();
    let mut simulator = Simulator::new(&spec, BENCH_START_MS);
    let log = EmbeddedLog::new(Retention { max_age: Duration::from_secs(3_600), max_bytes_per_partition: u64::MAX });
    let mut sink = LogSink::new(Arc::new(log), PIPELINE, 6);
    let started = Instant::now();
    let mut encoded = 0;
    while encoded < count {
        batch.clear();
        simulator.fill(&mut batch, 65_536.min(count - encoded));
        encoded += batch.len();
        black_box(sink.encode(&batch));
    }
    let encode = started.elapsed();
    println!("simulate: {customers} customers, {} meters, fleet built in {:.2} s", simulator.fleet().meters().len(), fleet_setup.as_secs_f64());
    json!({
        "bench": "simulate",
        "customers": customers,
        "readings": count,
        "readings_per_sec": per_sec(count, generate),
        "encoded_readings_per_sec": per_sec(count, encode),
    })
}

/// Resident memory of this process, bytes.
fn resident_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|field| field.parse().ok()).context("parsing /proc/self/statm")?;
    Ok(pages * 4_096)
}

/// Reads every record of the pipeline's topics with a fresh consumer group.
async fn for_each_record(
    log: &dyn ReadingLog,
    group: &str,
    mut each: impl FnMut(&TopicPartition, &LogRecord),
) -> anyhow::Result<()> {
    let topics: Vec<String> = Utility::ALL.iter().map(|&u| utility_topic(PIPELINE, u)).collect();
    let mut consumer = log.consumer(group, &topics)?;
    loop {
        match consumer.poll(8_192, Duration::from_millis(20)).await? {
            Polled::Records(batches) => {
                for batch in batches {
                    for record in &batch.records {
                        each(&batch.partition, record);
                    }
                }
            }
            Polled::Idle => return Ok(()),
            Polled::Assigned(_) | Polled::Revoked(_) | Polled::Lost(_) => {}
        }
    }
}

async fn engine_bench(count: usize, customers: u64, partitions: u32) -> anyhow::Result<serde_json::Value> {
    let mut spec = PipelineSpec::default();
    spec.log.partitions = partitions;
    spec.simulator.customers = customers;
    spec.simulator.mode = SimulatorMode::AsFastAsPossible;
    spec.simulator.out_of_order_share = 0.01;
    spec.simulator.duplicate_share = 0.001;
    let log = EmbeddedLog::new(Retention { max_age: Duration::from_secs(86_400), max_bytes_per_partition: u64::MAX });
    for utility in Utility::ALL {
        log.ensure_topic(&utility_topic(PIPELINE, utility), partitions).await?;
    }
    log.ensure_topic(&dead_letter_topic(PIPELINE), 1).await?;
    let log: Arc<dyn ReadingLog> = Arc::new(log);
    let mut simulator = Simulator::new(&spec.simulator, BENCH_START_MS);
    let mut sink = LogSink::new(log.producer()?, PIPELINE, partitions);
    let mut batch = Vec::with_capacity(65_536);
    let mut loaded = 0;
    while loaded < count {
        batch.clear();
        simulator.fill(&mut batch, 65_536.min(count - loaded));
        sink.write(&batch).await?;
        loaded += batch.len();
    }
    println!(
        "engine: {count} readings of {customers} customers loaded into {partitions} partitions per utility ({} s of event time)",
        (simulator.event_time_ms() - BENCH_START_MS) / 1_000
    );
    let config = ProcessorConfig::from_spec(PIPELINE, &spec);

    let resident_before = resident_bytes()?;
    let mut states: HashMap<TopicPartition, PartitionWindows> = HashMap::new();
    let started = Instant::now();
    for_each_record(log.as_ref(), "bench-state", |partition, record| {
        if let Ok(reading) = codec::decode(&record.value) {
            let windows = states
                .entry(partition.clone())
                .or_insert_with(|| PartitionWindows::new(reading.utility, config.windows.clone()));
            windows.add(&reading, record.timestamp_ms.unwrap_or_else(auth_core::now_ms));
        }
    })
    .await?;
    let state_time = started.elapsed();
    let open_windows: usize = states.values().map(PartitionWindows::open_windows).sum();
    let resident_growth = resident_bytes()?.saturating_sub(resident_before);
    let state_bytes: usize = states.values().map(PartitionWindows::heap_bytes).sum();
    let live_meters: usize = states.values().map(PartitionWindows::customers).sum();
    drop(states);

    let mut minute_sums: HashMap<(u64, i64), f64, rustc_hash::FxBuildHasher> = HashMap::default();
    let started = Instant::now();
    for_each_record(log.as_ref(), "bench-baseline", |_, record| {
        if let Ok(reading) = codec::decode(&record.value) {
            *minute_sums.entry((reading.customer_id, reading.ts_ms - reading.ts_ms.rem_euclid(60_000))).or_default() += reading.value;
        }
    })
    .await?;
    let baseline_time = started.elapsed();
    black_box(minute_sums.len());
    drop(minute_sums);

    let store: Arc<dyn ServingStore> = Arc::new(MemoryStore::new(spec.serving.recent_windows));
    let mut processor = Processor::new(config, log.as_ref(), store)?;
    let started = Instant::now();
    processor.drain(log.as_ref()).await?;
    let pipeline_time = started.elapsed();
    let counts = processor.counts();
    println!(
        "engine: counted {} (late {}), duplicates {}, too late {}, windows emitted {}",
        counts.counted, counts.counted_late, counts.duplicates, counts.too_late, counts.windows_emitted
    );
    Ok(json!({
        "bench": "engine",
        "readings": count,
        "customers": customers,
        "partitions_per_topic": partitions,
        "window_sizes_ms": spec.windows.effective_sizes_ms(),
        "readings_per_sec": per_sec(count, pipeline_time),
        "ns_per_reading": (pipeline_time.as_nanos() as f64 / count as f64).round(),
        "window_state_readings_per_sec": per_sec(count, state_time),
        "baseline_readings_per_sec": per_sec(count, baseline_time),
        "time_vs_baseline": (pipeline_time.as_secs_f64() / baseline_time.as_secs_f64() * 100.0).round() / 100.0,
        "open_windows": open_windows,
        "bytes_per_window": state_bytes / open_windows.max(1),
        "rss_bytes_per_window": resident_growth / open_windows.max(1) as u64,
        "live_meters": live_meters,
        "bytes_per_live_meter": state_bytes / live_meters.max(1),
        "rss_bytes_per_live_meter": resident_growth / live_meters.max(1) as u64,
    }))
}

/// See [`Bench::RedisMemory`].
async fn redis_memory_bench(customers: u64, servers: &Servers, keep: bool) -> anyhow::Result<serde_json::Value> {
    let mut spec = PipelineSpec::default();
    spec.serving.url = Some("redis://127.0.0.1:6379".into());
    spec.simulator.customers = customers;
    let spec = servers.apply(spec)?;
    let redis_url = spec.serving.url.clone().unwrap_or_default();
    let namespace = format!("bench-memory-{}", auth_core::now_ms());
    let widths = spec.windows.effective_sizes_ms();
    let recent = i64::from(spec.serving.recent_windows);
    let store = auth_redis::RedisStore::connect(&redis_url, &namespace, spec.serving.recent_windows, &widths).await?;
    let fleet = auth_ingest::Fleet::generate(&spec.simulator);
    let mut utilities: std::collections::BTreeMap<u64, Vec<Utility>> = std::collections::BTreeMap::new();
    for meter in fleet.meters() {
        utilities.entry(meter.customer_id).or_default().push(meter.utility);
    }
    let before = store.used_memory().await?;
    let now = BENCH_START_MS;
    let mut windows = 0u64;
    let started = Instant::now();
    let customer_ids: Vec<u64> = utilities.keys().copied().collect();
    for chunk in customer_ids.chunks(100) {
        let mut updates = Vec::new();
        for &customer_id in chunk {
            for &utility in &utilities[&customer_id] {
                for &width_ms in &widths {
                    let newest = now.div_euclid(width_ms) * width_ms;
                    for back in 0..=recent {
                        let start_ms = newest - back * width_ms;
                        updates.push(WindowUpdate {
                            owner: WindowOwner::Customer(customer_id),
                            utility,
                            slot: WindowSlot { width_ms, start_ms },
                            aggregate: auth_core::ports::Aggregate::of(1.0 + back as f64),
                            closed: back > 0,
                        });
                    }
                }
            }
        }
        windows += updates.len() as u64;
        let partition = TopicPartition::new(&format!("{namespace}.electricity"), (chunk[0] % 6) as u32);
        store.apply(PartitionFlush { partition, epoch: None, windows: updates, meters: Vec::new(), checkpoint: None }).await?;
    }
    let after = store.used_memory().await?;
    let written = started.elapsed();
    let count = customer_ids.len() as u64;
    let bytes_per_customer = after.saturating_sub(before) as f64 / count.max(1) as f64;
    let windows_per_customer = windows as f64 / count.max(1) as f64;
    let window_bytes_per_customer = windows_per_customer * 41.0;
    println!(
        "redis-memory: {count} customers, {windows} windows written in {:.1} s; Redis grew by {} bytes",
        written.as_secs_f64(),
        after.saturating_sub(before)
    );
    if !keep {
        store.delete_namespace().await?;
    }
    Ok(json!({
        "customers": count,
        "windows_per_customer": windows_per_customer.round(),
        "bytes_per_customer": bytes_per_customer.round(),
        "window_bytes_per_customer": window_bytes_per_customer.round(),
        "overhead_vs_windows": (bytes_per_customer / window_bytes_per_customer.max(1.0) * 100.0).round() / 100.0,
        "projected_gib_at_8m_customers": (bytes_per_customer * 8e6 / (1u64 << 30) as f64 * 10.0).round() / 10.0,
    }))
}

async fn kafka_bench(
    count: usize,
    customers: u64,
    partitions: u32,
    servers: &Servers,
    keep: bool,
) -> anyhow::Result<serde_json::Value> {
    let mut spec = PipelineSpec::default();
    spec.log.url = Some("kafka://127.0.0.1:9092".into());
    spec.serving.url = Some("redis://127.0.0.1:6379".into());
    spec.log.partitions = partitions;
    spec.log.retention_bytes = 1 << 40;
    spec.simulator.customers = customers;
    spec.simulator.mode = SimulatorMode::AsFastAsPossible;
    spec.simulator.out_of_order_share = 0.01;
    spec.simulator.duplicate_share = 0.001;
    let spec = servers.apply(spec)?;
    let kafka_url = spec.log.url.clone().unwrap_or_default();
    let redis_url = spec.serving.url.clone().unwrap_or_default();
    let pipeline = format!("bench-{}", auth_core::now_ms());
    let log = Arc::new(auth_kafka::KafkaLog::connect(&kafka_url, auth_kafka::TopicSettings::from_spec(&spec.log))?);
    auth_adapters::ensure_topics(log.as_ref(), &spec, &pipeline).await?;
    let topics: Vec<String> = Utility::ALL.iter().map(|&utility| utility_topic(&pipeline, utility)).collect();

    let mut simulator = Simulator::new(&spec.simulator, BENCH_START_MS);
    let mut sink = LogSink::new(log.producer()?, &pipeline, partitions);
    let mut batch = Vec::with_capacity(200_000);
    let mut loaded = 0;
    let started = Instant::now();
    while loaded < count {
        batch.clear();
        simulator.fill(&mut batch, 200_000.min(count - loaded));
        sink.write(&batch).await?;
        loaded += batch.len();
    }
    let produce_time = started.elapsed();
    println!(
        "kafka: {count} readings of {customers} customers produced to {kafka_url} ({partitions} partitions per utility, {} s of event time) at {} readings/s",
        (simulator.event_time_ms() - BENCH_START_MS) / 1_000,
        per_sec(count, produce_time)
    );

    let mut consumer = log.consumer(&format!("{pipeline}.consume"), &topics)?;
    let mut consumed = 0usize;
    let mut decoded = 0usize;
    let mut first_record = None;
    while consumed < count {
        if let Polled::Records(batches) = consumer.poll(8_192, Duration::from_millis(200)).await? {
            first_record.get_or_insert_with(Instant::now);
            for batch in &batches {
                consumed += batch.records.len();
                decoded += batch.records.iter().filter(|record| codec::decode(&record.value).is_ok()).count();
            }
        }
    }
    let consume_time = first_record.map_or(Duration::ZERO, |at| at.elapsed());
    drop(consumer);
    black_box(decoded);
    println!("kafka: a bare consumer read and decoded them at {} readings/s", per_sec(count, consume_time));

    let store = auth_redis::RedisStore::connect(&redis_url, &pipeline, spec.serving.recent_windows, &spec.windows.effective_sizes_ms()).await?;
    let commands_before = store.commands_processed().await?;
    let counting = Arc::new(CountingStore { inner: store.clone(), windows: AtomicU64::new(0) });
    let mut processor = Processor::new(ProcessorConfig::from_spec(&pipeline, &spec), log.as_ref(), Arc::clone(&counting) as Arc<dyn ServingStore>)?;
    let mut first_record = None;
    loop {
        let step = processor.step().await?;
        if matches!(step, auth_stream::Step::Records(_)) {
            first_record.get_or_insert_with(Instant::now);
        }
        if step == auth_stream::Step::Idle && processor.caught_up(log.as_ref()).await? {
            processor.flush(true).await?;
            break;
        }
    }
    let pipeline_time = first_record.map_or(Duration::ZERO, |at| at.elapsed());
    let redis_commands = store.commands_processed().await?.saturating_sub(commands_before);
    let window_writes = counting.windows.load(Ordering::Relaxed);
    let counts = processor.counts();
    println!(
        "kafka: processor counted {} (late {}), duplicates {}, too late {}, windows emitted {}; {redis_commands} Redis commands",
        counts.counted, counts.counted_late, counts.duplicates, counts.too_late, counts.windows_emitted
    );
    drop(processor);
    if !keep {
        let dead_letters = dead_letter_topic(&pipeline);
        let names: Vec<&str> = topics.iter().map(String::as_str).chain([dead_letters.as_str()]).collect();
        log.delete_topics(&names).await?;
        store.delete_namespace().await?;
    }
    Ok(json!({
        "bench": "kafka",
        "readings": count,
        "customers": customers,
        "partitions_per_topic": partitions,
        "window_sizes_ms": spec.windows.effective_sizes_ms(),
        "readings_per_sec": per_sec(count, pipeline_time),
        "consume_readings_per_sec": per_sec(count, consume_time),
        "time_vs_consume": (pipeline_time.as_secs_f64() / consume_time.as_secs_f64() * 100.0).round() / 100.0,
        "produce_readings_per_sec": per_sec(count, produce_time),
        "redis_commands": redis_commands,
        "redis_commands_per_reading": (redis_commands as f64 / count as f64 * 10_000.0).round() / 10_000.0,
        "window_writes_per_reading": (window_writes as f64 / count as f64 * 10_000.0).round() / 10_000.0,
    }))
}

/// Counts the window upserts the processor hands to the store.
struct CountingStore {
    inner: auth_redis::RedisStore,
    windows: AtomicU64,
}

#[async_trait::async_trait]
impl ServingStore for CountingStore {
    async fn claim(&self, partition: &TopicPartition) -> auth_core::ports::Result<u64> {
        self.inner.claim(partition).await
    }

    async fn apply(&self, flush: auth_core::ports::PartitionFlush) -> auth_core::ports::Result<()> {
        self.windows.fetch_add(flush.windows.len() as u64, Ordering::Relaxed);
        self.inner.apply(flush).await
    }

    async fn restate(&self, restatement: auth_core::ports::Restatement) -> auth_core::ports::Result<()> {
        self.inner.restate(restatement).await
    }

    async fn load_checkpoint(&self, partition: &TopicPartition) -> auth_core::ports::Result<Option<bytes::Bytes>> {
        self.inner.load_checkpoint(partition).await
    }

    async fn load_progress(&self, partition: &TopicPartition) -> auth_core::ports::Result<Option<auth_core::ports::StreamProgress>> {
        self.inner.load_progress(partition).await
    }

    async fn customer_windows(&self, customer_id: u64) -> auth_core::ports::Result<Vec<auth_core::ports::StoredWindow>> {
        self.inner.customer_windows(customer_id).await
    }

    async fn region_windows(&self, width_ms: i64, since_ms: i64) -> auth_core::ports::Result<Vec<auth_core::ports::RegionWindow>> {
        self.inner.region_windows(width_ms, since_ms).await
    }

    async fn known_customers(&self, limit: usize) -> auth_core::ports::Result<Vec<u64>> {
        self.inner.known_customers(limit).await
    }
    async fn meters_silent_since(
        &self,
        before_ms: i64,
        skip: usize,
        limit: usize,
    ) -> auth_core::ports::Result<Vec<auth_core::ports::MeterLastReading>> {
        self.inner.meters_silent_since(before_ms, skip, limit).await
    }
}
