//! A gateway on a backend, served on loopback, and what its topics hold.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use auth_core::ports::{LogProducer, ReadingLog};
use auth_core::gateway_key::KeyScope;
use auth_core::spec::PipelineSpec;
use auth_core::registry::RegistryRecord;
use auth_core::{Reading, Region, Utility, codec, dead_letter_topic, registry_topic, utility_topic};
use auth_ingest::Fleet;
use auth_ingest::registry_feed::{self, LiveRegistry};
use auth_ingest::gateway::Gateway;
use auth_ingest::keys::{self, KeyRing};
use auth_testkit::{Backend, read_topic};

/// 2026-11-28T00:00:00Z: readings of the test fleet are in the past of the receiver's clock.
pub const T0: i64 = 1_795_824_000_000;

pub fn spec() -> PipelineSpec {
    let mut spec = PipelineSpec::default();
    spec.log.partitions = 3;
    spec.ingest.max_body_bytes = 256 * 1024;
    spec.ingest.max_readings_per_request = 1_000;
    spec.simulator.customers = 300;
    spec.simulator.seed = 11;
    spec.simulator.start_ms = Some(T0);
    spec
}

/// The test's own meters: `TEST_METERS + n` of customer `n + 1000`, in US-CA
/// but for `TEST_METERS + 3`, in US-TX (see [`reading_json`]).
pub const TEST_METERS: u64 = 1_000_000;

/// A reading of test meter `TEST_METERS + n` in the full form, claiming `region`.
pub fn reading_json(n: u64, region: &str, value: f64) -> serde_json::Value {
    serde_json::json!({"meterId": TEST_METERS + n, "customerId": n + 1_000, "utility": "electricity", "region": region,
           "customerKind": "residential", "tsMs": T0 + n as i64, "value": value})
}

/// The registry of the tests: the simulator's fleet and 1,100 test meters.
pub fn registry(spec: &PipelineSpec) -> Vec<RegistryRecord> {
    let mut installations = Fleet::generate(&spec.simulator).installations(60);
    for n in 0..1_100 {
        let mut meter = installations[0].clone();
        meter.meter_id = TEST_METERS + n;
        meter.customer_id = n + 1_000;
        meter.premise_id = format!("TEST-{n}");
        meter.region = Region::from_code(if n == 3 { "US-TX" } else { "US-CA" }).unwrap();
        meter.utility = Utility::Electricity;
        meter.unit = auth_core::registry::MeterUnit::Wh;
        meter.customer_kind = auth_core::CustomerKind::Residential;
        installations.push(meter);
    }
    installations.into_iter().map(|installation| RegistryRecord { meter_id: installation.meter_id, installations: vec![installation] }).collect()
}

/// A gateway serving on loopback, with a key for every region and one for US-CA only.
pub struct Served {
    pub base: String,
    pub key: String,
    pub west_key: String,
    pub gateway: Gateway,
    pub keys: Arc<KeyRing>,
    _dir: tempfile::TempDir,
}

impl Served {
    pub async fn start(backend: &Backend, spec: &PipelineSpec) -> Self {
        Self::start_with(backend, spec, backend.log.producer().unwrap()).await
    }

    /// With the keys of the test's choosing (`key` and `west_key` are then not in the ring).
    pub async fn start_keyed(backend: &Backend, spec: &PipelineSpec, ring: KeyRing) -> Self {
        Self::start_full(backend, spec, backend.log.producer().unwrap(), Some(ring)).await
    }

    /// With a producer of the test's choosing (e.g. one that never acknowledges).
    pub async fn start_with(backend: &Backend, spec: &PipelineSpec, producer: Arc<dyn LogProducer>) -> Self {
        Self::start_full(backend, spec, producer, None).await
    }

    async fn start_full(backend: &Backend, spec: &PipelineSpec, producer: Arc<dyn LogProducer>, ring: Option<KeyRing>) -> Self {
        for utility in Utility::ALL {
            backend.log.ensure_topic(&utility_topic(&backend.pipeline, utility), spec.log.partitions).await.unwrap();
        }
        backend.log.ensure_topic(&dead_letter_topic(&backend.pipeline), 1).await.unwrap();
        // The registry travels as it does in production: over the registry topic.
        let registry_topic = registry_topic(&backend.pipeline);
        backend.log.ensure_compacted_topic(&registry_topic).await.unwrap();
        let writer = backend.log.producer().unwrap();
        registry_feed::publish(writer.as_ref(), &registry_topic, &registry(spec)).await.unwrap();
        let live = LiveRegistry::loading();
        let group = registry_feed::reader_group(&backend.pipeline, "test");
        let follower = registry_feed::follow(Arc::clone(&backend.log), registry_topic, group, Arc::clone(&live), std::future::pending());
        tokio::spawn(follower);
        tokio::time::timeout(std::time::Duration::from_secs(60), live.ready()).await.expect("the registry loads within 60 s");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (key, _) = keys::create_key(&path, "all regions", &KeyScope::default(), 0).unwrap();
        let (west_key, _) = keys::create_key(&path, "west", &KeyScope::regions(&["US-CA"]), 0).unwrap();
        let keys = Arc::new(ring.unwrap_or_else(|| KeyRing::load(std::slice::from_ref(&path)).unwrap()));
        let gateway = Gateway::new(producer, &backend.pipeline, spec, Arc::clone(&keys), live);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = gateway.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base, key, west_key, gateway, keys, _dir: dir }
    }

    /// Posts `body` with `key` (none when `None`); returns the status, the
    /// `Retry-After` header and the JSON answer.
    pub async fn post(&self, key: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Option<String>, serde_json::Value) {
        let mut request = reqwest::Client::new().post(format!("{}/api/v1/readings", self.base)).body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|value| value.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        (status, retry_after, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }
}

/// A reading as the topics hold it: utility topic, partition, key and decoded value.
pub type Stored = (Utility, u32, String, Reading);

/// Every reading on the pipeline's utility topics, sorted.
pub async fn stored_readings(log: &dyn ReadingLog, pipeline: &str) -> Vec<Stored> {
    let mut out = Vec::new();
    for utility in Utility::ALL {
        for (partition, record) in read_topic(log, &utility_topic(pipeline, utility), "audit").await {
            let reading = codec::decode(&record.value).unwrap();
            out.push((utility, partition, String::from_utf8(record.key.to_vec()).unwrap(), reading));
        }
    }
    sort(&mut out);
    out
}

/// The order [`stored_readings`] returns: by meter, event time and partition.
pub fn sort(stored: &mut [Stored]) {
    stored.sort_by_key(|stored| (stored.3.meter_id, stored.3.ts_ms, stored.1));
}

/// Where a reading must land: its utility's topic, its customer's partition, keyed by customer id.
pub fn expected_place(reading: &Reading, partitions: u32) -> Stored {
    (reading.utility, auth_core::partition_for(reading.customer_id, partitions), reading.customer_id.to_string(), *reading)
}

/// The dead letters on the pipeline's DLQ topic, as JSON.
pub async fn dead_letters(log: &dyn ReadingLog, pipeline: &str) -> Vec<serde_json::Value> {
    read_topic(log, &dead_letter_topic(pipeline), "audit")
        .await
        .into_iter()
        .map(|(_, record)| serde_json::from_slice(&record.value).unwrap())
        .collect()
}
