//! `PipelineSpec`: the one configuration type.
//!
//! It is the `spec` of the `UtilityPipeline` custom resource and the config
//! file every workload reads (`auth up --config spec.yaml`). Every field has a
//! default, so an empty file is a valid spec. Field names are camelCase, as
//! Kubernetes resources spell them; durations carry their unit in the name.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reading::Utility;

const DAY_SECS: u32 = 86_400;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.windows.sizesSecs.all(s, 86400 % s == 0)",
     "message": "windows.sizesSecs: every size must divide a day (86400 s) into whole windows"},
    {"rule": "self.stream.checkpointIntervalMs >= self.stream.flushIntervalMs",
     "message": "stream.checkpointIntervalMs must be at least stream.flushIntervalMs"},
    {"rule": "self.ingest.maxInFlightReadings >= self.ingest.maxReadingsPerRequest",
     "message": "ingest.maxInFlightReadings must be at least ingest.maxReadingsPerRequest"}
]))]
pub struct PipelineSpec {
    /// Utilities the pipeline carries; one log topic each.
    #[schemars(length(min = 1), extend("x-kubernetes-list-type" = "set"))]
    pub utilities: Vec<Utility>,
    pub windows: WindowSpec,
    pub log: LogSpec,
    pub serving: ServingSpec,
    pub stream: StreamSpec,
    pub ingest: IngestSpec,
    pub archive: ArchiveSpec,
    pub batch: BatchSpec,
    pub simulator: SimulatorSpec,
    /// How the operator runs the pipeline on Kubernetes (`auth up` ignores it).
    pub kubernetes: KubernetesSpec,
    /// What deleting the `UtilityPipeline` does to its topics: `Retain` keeps
    /// them, `Delete` deletes them (the workloads always go).
    pub deletion_policy: DeletionPolicy,
    /// Keeps the topics and data when the pipeline is deleted, whatever `deletionPolicy` says.
    pub deletion_protection: bool,
}

/// What happens to a deleted pipeline's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    Retain,
    Delete,
}

/// The workloads the operator creates for a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubernetesSpec {
    /// The `auth` image every workload runs.
    pub image: String,
    /// Ingest gateway replicas (HTTP and MQTT).
    #[schemars(range(max = 100))]
    pub gateway_replicas: u32,
    /// Stream processors: one consumer group, so at most one per partition does work.
    #[schemars(range(max = 1024))]
    pub stream_replicas: u32,
    /// Dashboard and API replicas.
    #[schemars(range(max = 100))]
    pub api_replicas: u32,
    /// When the daily batch runs (cron, UTC). It computes the newest date
    /// every region's local day of which has ended: the default, 11:30 UTC,
    /// comes after Hawaii's day ends (10:00 UTC), so each run computes the
    /// day before.
    #[schemars(length(min = 9))]
    pub batch_schedule: String,
    /// Redis the operator runs for the pipeline when `serving.url` is absent.
    pub redis: ManagedRedisSpec,
    /// CPU and memory of every `auth` container.
    pub resources: ResourcesSpec,
    /// Labels a node must carry to run the pipeline's pods.
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pipeline's pods tolerate.
    pub tolerations: Vec<Toleration>,
}

/// What a container is guaranteed (`requests`, what the scheduler places it
/// by) and may not exceed (`limits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourcesSpec {
    pub requests: ResourceAmounts,
    pub limits: ResourceAmounts,
}

/// Kubernetes quantities; an absent one is not set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAmounts {
    /// Cores, e.g. `250m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?m?$"))]
    pub cpu: Option<String>,
    /// Bytes, e.g. `512Mi` or `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub memory: Option<String>,
}

impl Default for ResourcesSpec {
    /// A small share of a node guaranteed, memory capped above what the batch
    /// engine may use by default (`batch.memoryLimitBytes`, 512 MiB), no CPU
    /// cap (a throttled processor only falls behind).
    fn default() -> Self {
        Self {
            requests: ResourceAmounts { cpu: Some("250m".into()), memory: Some("256Mi".into()) },
            limits: ResourceAmounts { cpu: None, memory: Some("2Gi".into()) },
        }
    }
}

/// A Kubernetes toleration: the pods may run on nodes with a matching taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// The taint's key; absent with `operator: Exists`, every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub operator: TolerationOperator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The taint's effect (`NoSchedule`, `PreferNoSchedule`, `NoExecute`); absent, every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// The Redis the operator manages: a StatefulSet with AOF persistence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ManagedRedisSpec {
    pub image: String,
    /// Size of its volume (a Kubernetes quantity, e.g. `1Gi`).
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub storage: String,
    /// CPU and memory of the Redis container.
    pub resources: ResourcesSpec,
}

impl Default for KubernetesSpec {
    fn default() -> Self {
        Self {
            image: format!("ghcr.io/auth-dev/auth:{}", env!("CARGO_PKG_VERSION")),
            gateway_replicas: 1,
            stream_replicas: 1,
            api_replicas: 1,
            batch_schedule: "30 11 * * *".into(),
            redis: ManagedRedisSpec::default(),
            resources: ResourcesSpec::default(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

impl Default for ManagedRedisSpec {
    fn default() -> Self {
        Self {
            image: "redis:7.2".into(),
            storage: "1Gi".into(),
            resources: ResourcesSpec {
                requests: ResourceAmounts { cpu: Some("100m".into()), memory: Some("128Mi".into()) },
                limits: ResourceAmounts { cpu: None, memory: Some("1Gi".into()) },
            },
        }
    }
}

/// Event-time windowing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WindowSpec {
    /// Tumbling window sizes, aligned to the Unix epoch; each divides a day.
    /// A one-day window is always kept too: it holds today's totals.
    #[schemars(length(min = 1), inner(range(min = 1, max = 86_400)), extend("x-kubernetes-list-type" = "set"))]
    pub sizes_secs: Vec<u32>,
    /// Bounded out-of-orderness: a meter's watermark trails its newest event time by this much.
    #[schemars(range(max = 3_600))]
    pub out_of_orderness_secs: u32,
    /// How long after its end (on the meter's own watermark) a customer window
    /// still accepts readings, and is emitted again.
    #[schemars(range(max = 86_400))]
    pub allowed_lateness_secs: u32,
    /// How long after its end (on the partition's watermark) a region window
    /// still takes in late customer readings; later ones are left to the batch.
    #[schemars(range(max = 86_400))]
    pub region_lateness_secs: u32,
    /// A reading dated further ahead of the log's clock than this is
    /// quarantined to the dead-letter topic, at the gateway and in the stream.
    #[schemars(range(min = 1, max = 86_400))]
    pub max_clock_ahead_secs: u32,
    /// A meter without readings for this long (processing time) has its
    /// windows closed once the clock passes their end; a partition without
    /// records for this long no longer holds back the pipeline's watermark.
    #[schemars(range(min = 1))]
    pub idle_timeout_secs: u32,
}

/// The reading log (Kafka topics, or the embedded log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LogSpec {
    /// Kafka bootstrap servers, `kafka://host:port[,host:port...]`. Without it the
    /// pipeline runs on the embedded log, which only `auth up` has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Replicas of each topic Kafka keeps (`replication.factor` at creation).
    #[schemars(range(min = 1))]
    pub replication_factor: u16,
    /// Partitions per utility topic.
    #[schemars(range(min = 1, max = 1_024))]
    pub partitions: u32,
    /// Records older than this are deleted (Kafka `retention.ms`).
    pub retention_secs: u64,
    /// A partition keeps at most this many bytes (Kafka `retention.bytes`; the embedded
    /// log counts each record's bookkeeping too, so this bounds its memory).
    pub retention_bytes: u64,
}

/// The serving store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServingSpec {
    /// Redis, `redis://host:port[/db]`. Without it the pipeline serves from the
    /// in-process store, which only `auth up` has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Closed windows kept per customer, utility and window size (older ones are dropped).
    #[schemars(range(min = 1))]
    pub recent_windows: u32,
}

/// The stream processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StreamSpec {
    /// How often changed windows, open ones included, are written to the serving store.
    /// One heartbeat (5 s) keeps the dashboard live while one write covers several readings.
    #[schemars(range(min = 1))]
    pub flush_interval_ms: u64,
    /// How often open-window state and offsets are checkpointed.
    pub checkpoint_interval_ms: u64,
    /// Most records taken from the log in one poll.
    #[schemars(range(min = 1))]
    pub max_poll_records: u32,
}

/// The ingest gateway (HTTP and MQTT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IngestSpec {
    /// Largest request body (or MQTT message) accepted; larger ones get 413.
    pub max_body_bytes: u64,
    /// Most readings in one request; more get 413.
    pub max_readings_per_request: u32,
    /// Readings sent to the log and not yet acknowledged, over all requests;
    /// a request that would exceed it gets 429 with `Retry-After`.
    pub max_in_flight_readings: u32,
    /// How long a request waits for the log to acknowledge its readings
    /// before it answers 503 (the client retries; duplicates count once).
    pub ack_timeout_ms: u64,
    /// Believe what each reading says of its customer, region, utility and
    /// kind, instead of taking them from the meter registry. Every reading
    /// then needs every field, and any key may write for any customer: for
    /// trying AUTH on readings whose meters are not registered, never for a
    /// utility's meters.
    pub trust_readings: bool,
}

/// The archiver, which keeps every valid reading as Parquet master data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ArchiveSpec {
    /// Where the master data lives: `s3://bucket/prefix` (endpoint and credentials
    /// from the `AWS_*` variables) or a local directory.
    pub url: String,
    /// A partition's file is written once its readings take this many bytes
    /// uncompressed (41 per reading; the Parquet file is several times smaller).
    pub roll_bytes: u64,
    /// ... or once its first reading has waited this long.
    pub roll_secs: u32,
}

/// The daily batch job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BatchSpec {
    /// Results database: `sqlite://path` (created when missing), `postgres://...` or `mysql://...`.
    pub database_url: String,
    /// Memory the query engine may use; larger intermediate results spill to disk.
    pub memory_limit_bytes: u64,
    /// In `auth up`, how often the batch recomputes today and the days before it.
    pub schedule_secs: u32,
    /// The rules that flag a meter's intervals `suspect` (flagged, never dropped).
    pub validation: ValidationSpec,
    /// How the batch estimates the intervals a meter missed (flagged `estimated`).
    pub estimation: EstimationSpec,
}

/// Estimation of missing intervals by the daily batch. An estimate fills an
/// interval the registry expected and no reading (nor an operator's edit)
/// filled; it counts in the day's totals, never overwrites a reading, and a
/// reading arriving later replaces it at the next run of its day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EstimationSpec {
    /// A gap of at most this long between two readings of a meter's day is
    /// filled by linear interpolation between them; 0 turns it off.
    #[schemars(range(max = 86_400))]
    pub interpolate_up_to_secs: u32,
    /// Longer gaps, and gaps at either end of the day, are filled with the
    /// mean of the meter's readings at the same weekday and time in up to
    /// this many previous weeks; 0 turns it off.
    #[schemars(range(max = 52))]
    pub profile_weeks: u32,
}

impl Default for EstimationSpec {
    fn default() -> Self {
        Self { interpolate_up_to_secs: 3_600, profile_weeks: 4 }
    }
}

/// Validation rules of the daily batch: each flags the intervals of a meter's
/// day it finds implausible; the readings still count in every total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ValidationSpec {
    /// An interval above this many times the meter's typical maximum (the 90th
    /// percentile of its non-zero intervals that day, when it has at least
    /// 8) is a spike; 0 turns the rule off.
    pub spike_factor: f64,
    /// This many consecutive readings of a meter with the same non-zero value
    /// are frozen (a stuck register); 0 turns the rule off.
    pub frozen_readings: u32,
}

impl Default for ValidationSpec {
    fn default() -> Self {
        Self { spike_factor: 10.0, frozen_readings: 12 }
    }
}

/// How the simulator runs its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SimulatorMode {
    /// Event time follows the wall clock.
    RealTime,
    /// Event time runs `timeFactor` times faster than the wall clock.
    Accelerated,
    /// Readings are produced as fast as the sink takes them.
    AsFastAsPossible,
}

/// The meter fleet simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SimulatorSpec {
    /// Whether the simulator runs: on Kubernetes only when true (a Deployment
    /// sending through the gateway's Service with a key of its own); `auth up`
    /// runs it unless this is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[schemars(range(min = 1))]
    pub customers: u64,
    /// The same seed gives the same fleet and the same readings.
    pub seed: u64,
    /// Share of customers that are businesses.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub business_share: f64,
    /// Share of customers with a gas meter (every customer has electricity and water).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub gas_share: f64,
    /// Interval between two readings of one meter.
    #[schemars(range(min = 1))]
    pub heartbeat_secs: u32,
    pub mode: SimulatorMode,
    /// Event-time speed-up in `accelerated` mode.
    pub time_factor: f64,
    /// Event time of the first reading, UTC ms; the wall clock at start when absent.
    pub start_ms: Option<i64>,
    /// Share of readings delayed by up to `disorderSecs` (within the watermark bound when small).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub out_of_order_share: f64,
    pub disorder_secs: u32,
    /// Share of readings delayed by `lateSecs`, past the allowed lateness.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub late_share: f64,
    pub late_secs: u32,
    /// Share of readings sent twice (as an MQTT QoS 1 redelivery does).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub duplicate_share: f64,
    /// Share of malformed readings (negative, not finite, or undecodable).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub malformed_share: f64,
}

impl Default for PipelineSpec {
    fn default() -> Self {
        Self {
            utilities: Utility::ALL.to_vec(),
            windows: WindowSpec::default(),
            log: LogSpec::default(),
            serving: ServingSpec::default(),
            stream: StreamSpec::default(),
            ingest: IngestSpec::default(),
            archive: ArchiveSpec::default(),
            batch: BatchSpec::default(),
            simulator: SimulatorSpec::default(),
            kubernetes: KubernetesSpec::default(),
            deletion_policy: DeletionPolicy::Retain,
            deletion_protection: false,
        }
    }
}

impl Default for WindowSpec {
    fn default() -> Self {
        Self {
            sizes_secs: vec![60, 3_600, DAY_SECS],
            out_of_orderness_secs: 10,
            allowed_lateness_secs: 60,
            region_lateness_secs: 3_600,
            max_clock_ahead_secs: 300,
            idle_timeout_secs: 30,
        }
    }
}

impl Default for LogSpec {
    fn default() -> Self {
        Self { url: None, replication_factor: 1, partitions: 6, retention_secs: 7 * u64::from(DAY_SECS), retention_bytes: 64 * 1024 * 1024 }
    }
}

impl Default for ServingSpec {
    fn default() -> Self {
        Self { url: None, recent_windows: 60 }
    }
}

impl Default for StreamSpec {
    fn default() -> Self {
        Self { flush_interval_ms: 5_000, checkpoint_interval_ms: 10_000, max_poll_records: 8_192 }
    }
}

impl Default for IngestSpec {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_readings_per_request: 10_000,
            max_in_flight_readings: 500_000,
            ack_timeout_ms: 10_000,
            trust_readings: false,
        }
    }
}

impl Default for ArchiveSpec {
    fn default() -> Self {
        Self { url: "auth-data/master".into(), roll_bytes: 128 * 1024 * 1024, roll_secs: 300 }
    }
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            database_url: "sqlite://auth-data/results.db".into(),
            memory_limit_bytes: 512 * 1024 * 1024,
            schedule_secs: 60,
            validation: ValidationSpec::default(),
            estimation: EstimationSpec::default(),
        }
    }
}

impl Default for SimulatorSpec {
    fn default() -> Self {
        Self {
            enabled: None,
            customers: 10_000,
            seed: 1,
            business_share: 0.1,
            gas_share: 0.6,
            heartbeat_secs: 5,
            mode: SimulatorMode::RealTime,
            time_factor: 60.0,
            start_ms: None,
            out_of_order_share: 0.0,
            disorder_secs: 8,
            late_share: 0.0,
            late_secs: 600,
            duplicate_share: 0.0,
            malformed_share: 0.0,
        }
    }
}

impl WindowSpec {
    /// The window sizes the engine keeps: the configured ones plus one day, sorted, in ms.
    pub fn effective_sizes_ms(&self) -> Vec<i64> {
        let mut sizes: Vec<i64> = self.sizes_secs.iter().map(|&secs| i64::from(secs) * 1_000).collect();
        sizes.push(i64::from(DAY_SECS) * 1_000);
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// How far ahead of the log's clock an event time may be, in ms.
    pub fn max_clock_ahead_ms(&self) -> i64 {
        i64::from(self.max_clock_ahead_secs) * 1_000
    }
}

/// One problem with a spec, with the path of the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Dotted path, e.g. `windows.sizesSecs[1]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read pipeline spec {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("pipeline spec {origin} is not valid YAML: {message}")]
    Syntax { origin: String, message: String },
    #[error("pipeline spec {origin} is invalid:\n{}", list(.problems))]
    Invalid { origin: String, problems: Vec<FieldProblem> },
}

fn list(problems: &[FieldProblem]) -> String {
    problems.iter().map(|problem| format!("  - {problem}")).collect::<Vec<_>>().join("\n")
}

impl PipelineSpec {
    /// How long after a day's end its data has settled: the stream takes no
    /// more readings of it (out-of-orderness plus allowed lateness) and the
    /// archiver has written what it took (`archive.rollSecs`). The batch
    /// restates only settled days and the API serves a batch day only when
    /// it was computed after that.
    pub fn settle_ms(&self) -> i64 {
        let windows = &self.windows;
        let secs = u64::from(windows.out_of_orderness_secs) + u64::from(windows.allowed_lateness_secs) + u64::from(self.archive.roll_secs);
        i64::try_from(secs.saturating_mul(1_000)).unwrap_or(i64::MAX)
    }

    /// Loads a spec from a YAML file, then checks it; see [`PipelineSpec::from_yaml`].
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SpecError::Read { path: path.display().to_string(), source })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses a spec from YAML. An unknown field, a value of the wrong type and
    /// every rule [`PipelineSpec::problems`] checks come back as errors naming
    /// the field path; `origin` names the input in messages.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, SpecError> {
        let tree: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_saphyr::from_str(text)
                .map_err(|err| SpecError::Syntax { origin: origin.to_owned(), message: err.to_string() })?
        };
        let tree = if tree.is_null() { serde_json::Value::Object(serde_json::Map::new()) } else { tree };
        let spec: PipelineSpec = serde_path_to_error::deserialize(tree).map_err(|err| {
            let path = err.path().to_string();
            SpecError::Invalid {
                origin: origin.to_owned(),
                problems: vec![FieldProblem { path, message: err.into_inner().to_string() }],
            }
        })?;
        let problems = spec.problems();
        if problems.is_empty() { Ok(spec) } else { Err(SpecError::Invalid { origin: origin.to_owned(), problems }) }
    }

    /// Every rule the spec breaks, each with its field path.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Problems::default();
        if self.utilities.is_empty() {
            problems.add("utilities", "needs at least one utility");
        }
        for (index, utility) in self.utilities.iter().enumerate() {
            if self.utilities[..index].contains(utility) {
                problems.add(format!("utilities[{index}]"), format!("{utility} is listed twice"));
            }
        }
        let windows = &self.windows;
        if windows.sizes_secs.is_empty() {
            problems.add("windows.sizesSecs", "needs at least one window size");
        }
        for (index, &size) in windows.sizes_secs.iter().enumerate() {
            let path = format!("windows.sizesSecs[{index}]");
            if size == 0 || !DAY_SECS.is_multiple_of(size) {
                problems.add(path, format!("{size} s does not divide a day (86400 s) into whole windows"));
            } else if windows.sizes_secs[..index].contains(&size) {
                problems.add(path, format!("{size} s is listed twice"));
            }
        }
        if windows.out_of_orderness_secs > 3_600 {
            problems.add("windows.outOfOrdernessSecs", "must be at most 3600 s");
        }
        if windows.allowed_lateness_secs > DAY_SECS {
            problems.add("windows.allowedLatenessSecs", "must be at most 86400 s");
        }
        if windows.region_lateness_secs > DAY_SECS {
            problems.add("windows.regionLatenessSecs", "must be at most 86400 s");
        }
        if !(1..=DAY_SECS).contains(&windows.max_clock_ahead_secs) {
            problems.add("windows.maxClockAheadSecs", "must be between 1 and 86400 s");
        }
        if windows.idle_timeout_secs == 0 {
            problems.add("windows.idleTimeoutSecs", "must be at least 1 s");
        }
        if let Some(Err(message)) = self.log.url.as_deref().map(crate::endpoint::kafka_bootstrap) {
            problems.add("log.url", message);
        }
        if self.log.replication_factor == 0 {
            problems.add("log.replicationFactor", "must be at least 1");
        }
        if let Some(url) = self.serving.url.as_ref().filter(|url| !url.starts_with("redis://") && !url.starts_with("rediss://")) {
            problems.add("serving.url", format!("{url:?} is not a redis:// or rediss:// URL"));
        }
        if !(1..=1_024).contains(&self.log.partitions) {
            problems.add("log.partitions", "must be between 1 and 1024");
        }
        if self.log.retention_secs == 0 {
            problems.add("log.retentionSecs", "must be at least 1 s");
        }
        if self.log.retention_bytes < 1024 * 1024 {
            problems.add("log.retentionBytes", "must be at least 1 MiB");
        }
        if self.serving.recent_windows == 0 {
            problems.add("serving.recentWindows", "must keep at least one window");
        }
        let stream = &self.stream;
        if stream.flush_interval_ms == 0 {
            problems.add("stream.flushIntervalMs", "must be at least 1 ms");
        }
        if stream.checkpoint_interval_ms < stream.flush_interval_ms {
            problems.add("stream.checkpointIntervalMs", "must be at least stream.flushIntervalMs");
        }
        if stream.max_poll_records == 0 {
            problems.add("stream.maxPollRecords", "must be at least 1");
        }
        let ingest = &self.ingest;
        if !(1_024..=1 << 30).contains(&ingest.max_body_bytes) {
            problems.add("ingest.maxBodyBytes", "must be between 1 KiB and 1 GiB");
        }
        if ingest.max_readings_per_request == 0 {
            problems.add("ingest.maxReadingsPerRequest", "must be at least 1");
        }
        if ingest.max_in_flight_readings < ingest.max_readings_per_request {
            problems.add("ingest.maxInFlightReadings", "must be at least ingest.maxReadingsPerRequest");
        }
        if ingest.ack_timeout_ms < 100 {
            problems.add("ingest.ackTimeoutMs", "must be at least 100 ms");
        }
        let archive = &self.archive;
        if archive.url.is_empty() {
            problems.add("archive.url", "names no location");
        }
        if archive.roll_bytes < 1024 * 1024 {
            problems.add("archive.rollBytes", "must be at least 1 MiB");
        }
        if archive.roll_secs == 0 {
            problems.add("archive.rollSecs", "must be at least 1 s");
        }
        let batch = &self.batch;
        if !["sqlite:", "postgres://", "postgresql://", "mysql://"].iter().any(|scheme| batch.database_url.starts_with(scheme)) {
            problems.add("batch.databaseUrl", format!("{:?} is not a sqlite:, postgres:// or mysql:// URL", batch.database_url));
        }
        if batch.memory_limit_bytes < 64 * 1024 * 1024 {
            problems.add("batch.memoryLimitBytes", "must be at least 64 MiB");
        }
        if batch.schedule_secs == 0 {
            problems.add("batch.scheduleSecs", "must be at least 1 s");
        }
        let spike_factor = batch.validation.spike_factor;
        if !(spike_factor == 0.0 || (spike_factor.is_finite() && spike_factor > 1.0)) {
            problems.add("batch.validation.spikeFactor", format!("{spike_factor} must be 0 (off) or a finite number above 1"));
        }
        if batch.validation.frozen_readings == 1 {
            problems.add("batch.validation.frozenReadings", "must be 0 (off) or at least 2");
        }
        if batch.estimation.interpolate_up_to_secs > DAY_SECS {
            problems.add("batch.estimation.interpolateUpToSecs", "must be at most a day, 86400 s");
        }
        if batch.estimation.profile_weeks > 52 {
            problems.add("batch.estimation.profileWeeks", "must be at most 52");
        }
        let simulator = &self.simulator;
        if simulator.customers == 0 {
            problems.add("simulator.customers", "must be at least 1");
        }
        if simulator.heartbeat_secs == 0 {
            problems.add("simulator.heartbeatSecs", "must be at least 1 s");
        }
        if !(simulator.time_factor.is_finite() && simulator.time_factor > 0.0) {
            problems.add("simulator.timeFactor", "must be a positive number");
        }
        for (name, share) in [
            ("businessShare", simulator.business_share),
            ("gasShare", simulator.gas_share),
            ("outOfOrderShare", simulator.out_of_order_share),
            ("lateShare", simulator.late_share),
            ("duplicateShare", simulator.duplicate_share),
            ("malformedShare", simulator.malformed_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                problems.add(format!("simulator.{name}"), format!("{share} is not a share between 0 and 1"));
            }
        }
        let kubernetes = &self.kubernetes;
        if kubernetes.image.trim().is_empty() {
            problems.add("kubernetes.image", "names no image");
        }
        if kubernetes.batch_schedule.split_whitespace().count() != 5 {
            problems.add("kubernetes.batchSchedule", format!("{:?} is not a cron schedule of 5 fields", kubernetes.batch_schedule));
        }
        problems.0
    }
}

#[derive(Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldProblem { path: path.into(), message: message.into() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(yaml: &str) -> Vec<FieldProblem> {
        match PipelineSpec::from_yaml(yaml, "test.yaml") {
            Err(SpecError::Invalid { problems, .. }) => problems,
            other => panic!("expected an invalid spec, got {other:?}"),
        }
    }

    #[test]
    fn server_urls_are_checked_and_named() {
        let problems = problems_of("log: {url: \"localhost:9092\", replicationFactor: 0}\nserving: {url: \"http://r\"}");
        let paths: Vec<&str> = problems.iter().map(|problem| problem.path.as_str()).collect();
        assert_eq!(paths, vec!["log.url", "log.replicationFactor", "serving.url"]);
        let spec = PipelineSpec::from_yaml("log: {url: \"kafka://k:9092\"}\nserving: {url: \"redis://r:6379/1\"}", "ok")
            .expect("valid URLs");
        assert_eq!(spec.log.url.as_deref(), Some("kafka://k:9092"));
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(PipelineSpec::from_yaml("", "empty").expect("valid"), PipelineSpec::default());
        assert!(PipelineSpec::default().problems().is_empty());
        assert_eq!(PipelineSpec::default().windows.effective_sizes_ms(), vec![60_000, 3_600_000, 86_400_000]);
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let spec = PipelineSpec::from_yaml("windows:\n  sizesSecs: [300]\nsimulator:\n  customers: 5\n", "t")
            .expect("valid");
        assert_eq!(spec.windows.sizes_secs, vec![300]);
        assert_eq!(spec.windows.out_of_orderness_secs, 10);
        assert_eq!(spec.simulator.customers, 5);
        assert_eq!(spec.windows.effective_sizes_ms(), vec![300_000, 86_400_000]);
    }

    #[test]
    fn unknown_field_names_its_path() {
        let problems = problems_of("simulator:\n  custommers: 5\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "simulator.custommers");
        assert!(problems[0].message.contains("custommers"), "{}", problems[0].message);
    }

    #[test]
    fn wrong_type_names_its_path() {
        let problems = problems_of("windows:\n  sizesSecs: [60, ten]\n");
        assert_eq!(problems[0].path, "windows.sizesSecs[1]");
    }

    #[test]
    fn every_rule_broken_is_reported() {
        let problems = problems_of(
            "utilities: []\nwindows:\n  sizesSecs: [60, 7, 60]\nlog:\n  partitions: 0\nsimulator:\n  lateShare: 2\n",
        );
        let paths: Vec<&str> = problems.iter().map(|problem| problem.path.as_str()).collect();
        assert_eq!(
            paths,
            ["utilities", "windows.sizesSecs[1]", "windows.sizesSecs[2]", "log.partitions", "simulator.lateShare"]
        );
        let message = SpecError::Invalid { origin: "x".into(), problems }.to_string();
        assert!(message.contains("log.partitions: must be between 1 and 1024"), "{message}");
    }

    #[test]
    fn validation_rules_are_checked_and_named() {
        let problems = problems_of("batch:\n  validation: {spikeFactor: 0.5, frozenReadings: 1}\n");
        let paths: Vec<&str> = problems.iter().map(|problem| problem.path.as_str()).collect();
        assert_eq!(paths, ["batch.validation.spikeFactor", "batch.validation.frozenReadings"]);
        let off = PipelineSpec::from_yaml("batch:\n  validation: {spikeFactor: 0, frozenReadings: 0}\n", "t").expect("rules off");
        assert_eq!(off.batch.validation, ValidationSpec { spike_factor: 0.0, frozen_readings: 0 });
    }

    #[test]
    fn estimation_settings_are_checked_and_named() {
        let problems = problems_of("batch:\n  estimation: {interpolateUpToSecs: 90000, profileWeeks: 53}\n");
        let paths: Vec<&str> = problems.iter().map(|problem| problem.path.as_str()).collect();
        assert_eq!(paths, ["batch.estimation.interpolateUpToSecs", "batch.estimation.profileWeeks"]);
        let off = PipelineSpec::from_yaml("batch:\n  estimation: {interpolateUpToSecs: 0, profileWeeks: 0}\n", "t").expect("off");
        assert_eq!(off.batch.estimation, EstimationSpec { interpolate_up_to_secs: 0, profile_weeks: 0 });
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(matches!(PipelineSpec::from_yaml("windows: [", "t"), Err(SpecError::Syntax { .. })));
    }
}
