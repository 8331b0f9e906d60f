//! Runs `auth` processes against Kafka and Redis and compares what they left
//! in Redis with a reference run in this process.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_core::PipelineSpec;
use auth_core::ports::{PortError, ServingStore, StreamProgress, TopicPartition};
use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use auth_core::utility_topic;
use auth_master::FileName;
use auth_master::MasterStore;
use auth_master::archiver::archive_progress;
use auth_redis::RedisStore;
use auth_stream::{PartitionCounts, Processor, ProcessorConfig};
use auth_testkit::{Backend, Dump, dump, kafka_url, redis_url};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// 2026-11-28T00:00:00Z.
pub const T0: i64 = 1_795_824_000_000;

/// A pipeline of its own on the shared servers, with its spec file and process logs.
/// Runs `request` until it succeeds; a server that answers "unavailable" is
/// asked again for up to 60 s, the recovery the chaos and restart suites
/// allow the pipeline. Any other error fails the test.
async fn retrying_unavailable<T, F, Fut>(what: &str, request: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, PortError>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match request().await {
            Ok(answer) => return answer,
            Err(err @ PortError::Unavailable { .. }) if Instant::now() < deadline => {
                eprintln!("{what} unavailable, retrying: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("{what}: {err}"),
        }
    }
}

pub struct TestPipeline {
    pub backend: Backend,
    pub spec: PipelineSpec,
    pub dir: tempfile::TempDir,
}

impl TestPipeline {
    pub fn new(prefix: &str) -> Self {
        let backend = Backend::real(prefix);
        let dir = tempfile::tempdir().unwrap();
        // The runs of a test are compared with a reference run made minutes
        // apart; a partition quiet for the idle timeout closes its windows on
        // the wall clock, so none may go quiet for that long here.
        let yaml = format!(
            "log: {{url: \"{}\", partitions: 3}}\n\
             archive: {{url: \"{}\", rollSecs: 2}}\n\
             serving: {{url: \"{}\", recentWindows: 10000}}\n\
             windows: {{sizesSecs: [60, 3600], idleTimeoutSecs: 3600}}\n\
             stream: {{flushIntervalMs: 200, checkpointIntervalMs: 400, maxPollRecords: 2000}}\n\
             simulator: {{customers: 3000, seed: 7, mode: asFastAsPossible, startMs: {T0}, \
             outOfOrderShare: 0.05, lateShare: 0.01, lateSecs: 200, duplicateShare: 0.02, malformedShare: 0.002}}\n",
            kafka_url(),
            dir.path().join("master").display(),
            redis_url()
        );
        std::fs::write(dir.path().join("spec.yaml"), &yaml).unwrap();
        let spec = PipelineSpec::from_yaml(&yaml, "test spec").unwrap();
        Self { backend, spec, dir }
    }

    pub fn name(&self) -> &str {
        &self.backend.pipeline
    }

    /// `auth <subcommand>` of this pipeline, with a `/metrics` listener of its own.
    fn command(&self, subcommand: &str) -> Command {
        let mut command = self.job_command(subcommand);
        command.args(["--metrics-listen", "127.0.0.1:0"]);
        command
    }

    /// `auth <subcommand>` of this pipeline, for a subcommand that serves no metrics (a job).
    fn job_command(&self, subcommand: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_auth"));
        command
            .arg(subcommand)
            .arg("--config")
            .arg(self.dir.path().join("spec.yaml"))
            .arg("--pipeline")
            .arg(self.name())
            .env("AUTH_LOG", "info,auth_stream=debug")
            .env("NO_COLOR", "1")
            .env_remove("AUTH_KAFKA_URL")
            .env_remove("AUTH_REDIS_URL")
            .stdin(Stdio::null());
        command
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn logged(&self, mut command: Command, name: &str) -> Command {
        let log = File::create(self.log_path(name)).unwrap();
        command.stdout(log.try_clone().unwrap()).stderr(log);
        command
    }

    /// `auth simulate --to kafka://... --count N`, starting at `start_ms`.
    pub fn produce(&self, count: u64, start_ms: i64) {
        let mut command = self.command("simulate");
        command.args(["--to", &kafka_url(), "--count", &count.to_string(), "--start-ms", &start_ms.to_string()]);
        let status = self.logged(command, &format!("simulate-{start_ms}")).status().unwrap();
        assert!(status.success(), "auth simulate failed: {}", self.read_log(&format!("simulate-{start_ms}")));
    }

    /// Starts `auth stream`; its output goes to `<name>.log`.
    pub fn start_stream(&self, name: &str) -> Running {
        Running(Some(self.logged(self.command("stream"), name).spawn().unwrap()))
    }

    /// Starts `auth archive` (into the spec's `archive.url`); its output goes to `<name>.log`.
    pub fn start_archive(&self, name: &str) -> Running {
        Running(Some(self.logged(self.command("archive"), name).spawn().unwrap()))
    }

    /// `auth batch --date <date>` into a SQLite database in the test's folder; must succeed; returns its output.
    pub fn batch(&self, date: &str) -> String {
        let database = format!("sqlite://{}", self.dir.path().join("results.db").display());
        let mut command = self.job_command("batch");
        command.args(["--date", date, "--database-url", &database]);
        command.env_remove("AUTH_DATABASE_URL").env_remove("AUTH_MASTER_URL");
        let name = format!("batch-{date}");
        let status = self.logged(command, &name).status().unwrap();
        let output = self.read_log(&name);
        assert!(status.success(), "auth batch failed: {output}");
        output
    }

    /// `auth stream --exit-when-caught-up`, which must succeed.
    pub fn stream_to_the_end(&self, name: &str) {
        let mut command = self.command("stream");
        command.arg("--exit-when-caught-up");
        let status = self.logged(command, name).status().unwrap();
        assert!(status.success(), "auth stream failed: {}", self.read_log(name));
    }

    /// The last lines of every process log, for a failure message.
    pub fn log_tails(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|entry| Some(entry.ok()?.path()))
            .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
            .collect();
        names.sort();
        let mut out = String::new();
        for path in names {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- last lines of {}\n", path.display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    /// Copies the process logs to a folder that outlives the test; returns its path.
    pub fn keep_logs(&self) -> String {
        let kept = std::env::temp_dir().join(format!("auth-test-logs-{}", self.name()));
        let _ = std::fs::create_dir_all(&kept);
        for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
            let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
        }
        kept.display().to_string()
    }

    /// Waits until the log of process `name` contains `text`.
    pub fn wait_for_log(&self, name: &str, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.read_log(name).contains(text) {
            assert!(Instant::now() < deadline, "{name} did not log {text:?} within {within:?}\n{}", self.log_tails());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// The serving store the processes write (namespace = pipeline name).
    pub async fn store(&self) -> RedisStore {
        RedisStore::connect(&redis_url(), self.name(), self.spec.serving.recent_windows, &self.widths()).await.unwrap()
    }

    pub fn widths(&self) -> Vec<i64> {
        self.spec.windows.effective_sizes_ms()
    }

    /// One processor in this process, in a group and store namespace of its own, over the whole log.
    pub async fn reference(&self) -> (Dump, PartitionCounts) {
        let namespace = format!("{}:reference", self.name());
        let store: Arc<dyn ServingStore> =
            Arc::new(RedisStore::connect(&redis_url(), &namespace, self.spec.serving.recent_windows, &self.widths()).await.unwrap());
        let config = ProcessorConfig { group: namespace.clone(), ..ProcessorConfig::from_spec(self.name(), &self.spec) };
        let mut processor = Processor::new(config, self.backend.log.as_ref(), Arc::clone(&store)).unwrap();
        processor.drain(self.backend.log.as_ref()).await.unwrap();
        (dump(store.as_ref(), &self.widths()).await, processor.counts())
    }

    /// The end offset of a partition. A broker that is restarting or moving
    /// a leader answers "unavailable" for a moment (the chaos and restart
    /// suites stop brokers on purpose). (After the ninth broker
    /// restart of a run, this long-lived client's metadata requests failed
    /// with a transport failure for 30 s, while a new client produced.)
    pub async fn end_offset(&self, partition: &TopicPartition) -> u64 {
        let ends = retrying_unavailable(&format!("end offsets of {partition:?}"), || self.backend.log.end_offsets(&partition.topic)).await;
        ends[partition.partition as usize]
    }

    /// The progress of every partition's checkpoint, `None` where there is
    /// none yet. Redis answers "unavailable" while it loads its data after a
    /// restart, or while a script runs past its busy threshold.
    pub async fn checkpoints(&self, store: &RedisStore) -> Vec<(TopicPartition, Option<StreamProgress>)> {
        let mut out = Vec::new();
        for partition in self.partitions() {
            let progress = retrying_unavailable(&format!("checkpoint of {partition:?}"), || store.load_progress(&partition)).await;
            out.push((partition, progress));
        }
        out
    }

    /// Records covered by checkpoints, and records in the log.
    pub async fn progress(&self, store: &RedisStore) -> (u64, u64) {
        let (mut done, mut total) = (0, 0);
        for (partition, summary) in self.checkpoints(store).await {
            total += self.end_offset(&partition).await;
            done += summary.map_or(0, |summary| summary.next_offset);
        }
        (done, total)
    }

    /// The next offset of every partition's checkpoint (0 where there is none).
    pub async fn checkpoint_offsets(&self, store: &RedisStore) -> Vec<u64> {
        self.checkpoints(store).await.into_iter().map(|(_, summary)| summary.map_or(0, |summary| summary.next_offset)).collect()
    }

    /// Waits until the checkpoints cover more than `records`.
    pub async fn wait_for_progress_beyond(&self, store: &RedisStore, records: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.progress(store).await.0 <= records {
            assert!(Instant::now() < deadline, "no checkpoint progress beyond {records} records\n{}", self.log_tails());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the checkpoints of every partition reached the end of the log.
    pub async fn wait_for_checkpoints_at_end(&self, store: &RedisStore, within: Duration) -> PartitionCounts {
        let deadline = Instant::now() + within;
        loop {
            let mut behind = 0u64;
            let mut counts = PartitionCounts::default();
            for (partition, summary) in self.checkpoints(store).await {
                let end = self.end_offset(&partition).await;
                let done = summary.map_or(0, |summary| summary.next_offset);
                behind += end.saturating_sub(done);
                if let Some(summary) = summary {
                    counts += summary.counts;
                }
            }
            if behind == 0 {
                return counts;
            }
            if Instant::now() >= deadline {
                let kept = self.keep_logs();
                panic!("checkpoints are still {behind} records behind the log (logs kept in {kept})\n{}", self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the archiver's published progress reached the end of the log
    /// on every partition; returns the records in the log.
    pub async fn wait_for_archive_at_end(&self, within: Duration) -> u64 {
        let master = MasterStore::open(self.dir.path().join("master").to_str().unwrap()).unwrap();
        let deadline = Instant::now() + within;
        loop {
            let (mut behind, mut records) = (0u64, 0u64);
            for partition in self.partitions() {
                let end = self.end_offset(&partition).await;
                let archived = archive_progress(&master, &partition).await.unwrap().archived_before;
                behind += end.saturating_sub(archived);
                records += end;
            }
            if behind == 0 {
                return records;
            }
            if Instant::now() >= deadline {
                let kept = self.keep_logs();
                panic!("the archiver is still {behind} records behind the log (logs kept in {kept})\n{}", self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every (utility, partition, log offset) in the master data, with how often it is there.
    pub fn archived_offsets(&self) -> BTreeMap<(String, u32, u64), u32> {
        let mut seen = BTreeMap::new();
        for path in parquet_files(&self.dir.path().join("master").join("readings")) {
            let date_folder = path.parent().unwrap();
            let utility = date_folder.parent().unwrap().file_name().unwrap().to_str().unwrap().trim_start_matches("utility=");
            let name = FileName::parse(path.file_name().unwrap().to_str().unwrap()).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().build().unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let offsets = batch.column_by_name("log_offset").unwrap().as_primitive::<UInt64Type>();
                for offset in offsets.values() {
                    *seen.entry((utility.to_owned(), name.partition, *offset)).or_insert(0) += 1;
                }
            }
        }
        seen
    }

    /// Every partition of the pipeline's topics.
    fn partitions(&self) -> Vec<TopicPartition> {
        let mut out = Vec::new();
        for &utility in &self.spec.utilities {
            let topic = utility_topic(self.name(), utility);
            out.extend((0..self.spec.log.partitions).map(|partition| TopicPartition::new(&topic, partition)));
        }
        out
    }
}

fn parquet_files(directory: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "parquet") {
            files.push(path);
        }
    }
    files
}

/// A child process that is killed when the test ends, even when it fails.
pub struct Running(Option<Child>);

impl Running {
    /// Sends `signal` (e.g. `STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let Some(child) = self.0.as_ref() else { return };
        let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL, and wait for it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM and expects a clean exit.
pub fn stop(mut running: Running, pipeline: &TestPipeline, name: &str) {
    let Some(mut child) = running.0.take() else { return };
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{name} did not stop cleanly: {}", pipeline.read_log(name));
}

/// Asserts the store holds exactly the reference's windows; on a difference,
/// keeps the processes' logs and names a few windows that differ.
pub fn assert_same(actual: &Dump, expected: &Dump, pipeline: TestPipeline, context: &str) {
    assert!(expected.len() > 1_000, "{context}: the reference produced windows: {}", expected.len());
    let missing: Vec<&String> = expected.keys().filter(|key| !actual.contains_key(*key)).collect();
    let extra: Vec<&String> = actual.keys().filter(|key| !expected.contains_key(*key)).collect();
    let differing: Vec<(&String, _, _)> = expected
        .iter()
        .filter_map(|(key, value)| actual.get(key).filter(|got| *got != value).map(|got| (key, value, got)))
        .collect();
    if missing.is_empty() && extra.is_empty() && differing.is_empty() {
        return;
    }
    let logs = pipeline.dir.keep();
    panic!(
        "{context}: {} windows missing (e.g. {:?}), {} extra (e.g. {:?}), {} with other values (e.g. {:?}) of {}; logs in {}",
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
        differing.len(),
        &differing[..differing.len().min(3)],
        expected.len(),
        logs.display()
    );
}
