//! The archiver on the embedded log and on Kafka: every valid reading ends up
//! in the master data exactly once, however often the archiver is killed.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use auth_core::ports::{LogConsumer, OutRecord, Polled, PortError, ReadingLog, TopicPartition};
use auth_core::{ArchiveSpec, CustomerKind, PipelineSpec, Reading, Region, Utility, codec, partition_for, utility_topic};
use auth_master::archiver::{ArchiveSettings, Archiver};
use auth_master::{FileName, MasterStore};
use auth_testkit::{Backend, unique_name};
use bytes::Bytes;
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{TimestampMillisecondType, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const PARTITIONS: u32 = 3;
/// 2026-11-27T20:20:00Z: the readings (one every 7 s) spread over this day and the next.
const START_MS: i64 = 1_795_810_800_000;

fn reading(index: u64) -> Reading {
    let customer_id = 1 + index % 37;
    let utility = Utility::ALL[(index % 3) as usize];
    Reading {
        meter_id: customer_id * 4 + utility.index() as u64,
        customer_id,
        utility,
        region: Region::from_index((customer_id % 51) as usize).unwrap(),
        customer_kind: CustomerKind::Residential,
        ts_ms: START_MS + (index as i64) * 7_000,
        value: (index % 100) as f64 / 4.0,
        cumulative: false,
    }
}

/// Writes `count` readings (and a garbage record every 101st) to the pipeline's topics.
async fn produce(log: &dyn ReadingLog, pipeline: &str, count: u64) -> u64 {
    for utility in Utility::ALL {
        log.ensure_topic(&utility_topic(pipeline, utility), PARTITIONS).await.unwrap();
    }
    let producer = log.producer().unwrap();
    let mut valid = 0;
    let mut by_topic: BTreeMap<Utility, Vec<OutRecord>> = BTreeMap::new();
    for index in 0..count {
        let reading = reading(index);
        let value = if index % 101 == 100 { Bytes::from_static(b"not a reading") } else { valid += 1; Bytes::copy_from_slice(&codec::encode(&reading)) };
        by_topic.entry(reading.utility).or_default().push(OutRecord {
            partition: partition_for(reading.customer_id, PARTITIONS),
            key: Bytes::from(reading.customer_id.to_string()),
            value,
        });
    }
    for (utility, records) in by_topic {
        for chunk in records.chunks(500) {
            producer.send(&utility_topic(pipeline, utility), chunk.to_vec()).await.unwrap();
        }
    }
    valid
}

fn settings(archive: ArchiveSpec) -> ArchiveSettings {
    ArchiveSettings { archive, max_clock_ahead_ms: PipelineSpec::default().windows.max_clock_ahead_ms() }
}

fn archiver(log: &dyn ReadingLog, pipeline: &str, master: &MasterStore, roll_readings: u64) -> Archiver {
    archiver_in(log, pipeline, &format!("{pipeline}.archive"), master, roll_readings)
}

fn archiver_in(log: &dyn ReadingLog, pipeline: &str, group: &str, master: &MasterStore, roll_readings: u64) -> Archiver {
    let topics: Vec<(String, Utility)> = Utility::ALL.iter().map(|&u| (utility_topic(pipeline, u), u)).collect();
    let names: Vec<String> = topics.iter().map(|(topic, _)| topic.clone()).collect();
    let consumer = log.consumer(group, &names).unwrap();
    let spec = ArchiveSpec { url: master.location().to_owned(), roll_bytes: roll_readings * 41, roll_secs: 3_600 };
    Archiver::new(master.clone(), consumer, topics, settings(spec), group.to_owned())
}

/// Every (utility, partition, offset) in the master data with how often it is there, and the rows;
/// checks that each file holds readings of its date from its first offset on.
fn archived(directory: &std::path::Path) -> (BTreeMap<(String, u32, u64), u32>, u64) {
    let mut seen = BTreeMap::new();
    let mut rows = 0;
    for entry in walk(&directory.join("readings")) {
        let utility = entry.parent().unwrap().parent().unwrap().file_name().unwrap().to_str().unwrap().trim_start_matches("utility=").to_owned();
        let date = entry.parent().unwrap().file_name().unwrap().to_str().unwrap().trim_start_matches("date=").to_owned();
        let name = FileName::parse(entry.file_name().unwrap().to_str().unwrap()).unwrap();
        let file = std::fs::File::open(&entry).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for batch in reader {
            let batch: RecordBatch = batch.unwrap();
            let offsets = batch.column_by_name("log_offset").unwrap().as_primitive::<UInt64Type>();
            let times = batch.column_by_name("ts").unwrap().as_primitive::<TimestampMillisecondType>();
            for row in 0..batch.num_rows() {
                let offset = offsets.value(row);
                assert!(offset >= name.first_offset, "{entry:?} holds offset {offset}");
                assert_eq!(auth_master::date_of(times.value(row)).to_string(), date, "{entry:?}: a reading of another date");
                *seen.entry((utility.clone(), name.partition, offset)).or_insert(0) += 1;
                rows += 1;
            }
        }
    }
    (seen, rows)
}

fn walk(directory: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(directory) else { return files };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|ext| ext == "parquet") {
            files.push(path);
        }
    }
    files
}

/// Runs an archiver, writing its segments now and then, until the master data
/// holds `expected` readings (a group may take a while to give a new member
/// the partitions of killed ones), then lets it finish.
async fn drain(mut archiver: Archiver, directory: &std::path::Path, expected: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut quiet = 0;
        while quiet < 5 {
            if archiver.step().await.unwrap() { quiet = 0 } else { quiet += 1 }
        }
        archiver.finish().await.unwrap();
        let (_, rows) = archived(directory);
        if rows >= expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the archiver wrote {rows} of {expected} readings within 120 s");
    }
}

async fn every_reading_once_despite_kills(backend: Backend) {
    let directory = tempfile::tempdir().unwrap();
    let master = MasterStore::open(directory.path().to_str().unwrap()).unwrap();
    let pipeline = backend.pipeline.clone();
    let valid = produce(backend.log.as_ref(), &pipeline, 6_000).await;
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..6 {
        // Killed after a random time: mid-poll, mid-upload, or between the
        // upload and the commit; each one with another roll size.
        let mut killed = archiver(backend.log.as_ref(), &pipeline, &master, 150 + rng.u64(0..300));
        let budget = Duration::from_millis(rng.u64(30..600));
        let _ = tokio::time::timeout(budget, async move {
            loop {
                killed.step().await.unwrap();
            }
        })
        .await;
    }
    drain(archiver(backend.log.as_ref(), &pipeline, &master, 400), directory.path(), valid).await;
    let (seen, rows) = archived(directory.path());
    let repeated: Vec<_> = seen.iter().filter(|&(_, &copies)| copies > 1).take(5).collect();
    assert!(repeated.is_empty(), "readings archived twice: {repeated:?}");
    assert_eq!(rows, valid, "every valid reading, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_every_reading_once_despite_kills() {
    every_reading_once_despite_kills(Backend::embedded(&unique_name("archive"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Redis: scripts/test.sh"]
async fn kafka_every_reading_once_despite_kills() {
    every_reading_once_despite_kills(Backend::real(&unique_name("archive"))).await;
}

/// The worst a stale archiver can do: two archivers each believing they own
/// every partition (here: in groups of their own), rolling at other sizes,
/// interleaved at random. Each follows the segment bounds the other fixed
/// first, so every reading is in the master data once.
async fn two_owners_of_every_partition_write_each_reading_once(backend: Backend) {
    let directory = tempfile::tempdir().unwrap();
    let master = MasterStore::open(directory.path().to_str().unwrap()).unwrap();
    let pipeline = backend.pipeline.clone();
    let mut valid = produce(backend.log.as_ref(), &pipeline, 200).await;
    let mut first = archiver_in(backend.log.as_ref(), &pipeline, &format!("{pipeline}.first"), &master, 40);
    let mut second = archiver_in(backend.log.as_ref(), &pipeline, &format!("{pipeline}.second"), &master, 90);
    let mut rng = fastrand::Rng::with_seed(11);
    // The readings come in waves, so each archiver's segments end where its
    // own roll size says, at other offsets than the other's.
    for _ in 0..30 {
        valid += produce(backend.log.as_ref(), &pipeline, 200).await;
        for _ in 0..rng.usize(1..6) {
            if rng.bool() { first.step().await.unwrap(); } else { second.step().await.unwrap(); }
        }
    }
    drain(first, directory.path(), valid).await;
    drain(second, directory.path(), valid).await;
    let (seen, rows) = archived(directory.path());
    let repeated: Vec<_> = seen.iter().filter(|&(_, &copies)| copies > 1).take(5).collect();
    assert!(repeated.is_empty(), "readings archived twice: {repeated:?}");
    assert_eq!(rows, valid, "every valid reading, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_two_owners_of_every_partition_write_each_reading_once() {
    two_owners_of_every_partition_write_each_reading_once(Backend::embedded(&unique_name("owners"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Redis: scripts/test.sh"]
async fn kafka_two_owners_of_every_partition_write_each_reading_once() {
    two_owners_of_every_partition_write_each_reading_once(Backend::real(&unique_name("owners"))).await;
}

/// A consumer whose commits fail: its archiver uploads a segment and dies before committing it.
struct CommitsFail(Box<dyn LogConsumer>);

#[async_trait::async_trait]
impl LogConsumer for CommitsFail {
    async fn poll(&mut self, max_records: usize, timeout: Duration) -> Result<Polled, PortError> {
        self.0.poll(max_records, timeout).await
    }
    fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<(), PortError> {
        self.0.seek(partition, offset)
    }
    async fn commit(&mut self, _: &[(TopicPartition, u64)]) -> Result<(), PortError> {
        Err(PortError::Closed("the test's consumer".into()))
    }
}

#[tokio::test]
async fn a_segment_uploaded_but_not_committed_is_replaced() {
    let backend = Backend::embedded("uncommitted");
    let directory = tempfile::tempdir().unwrap();
    let master = MasterStore::open(directory.path().to_str().unwrap()).unwrap();
    let valid = produce(backend.log.as_ref(), "uncommitted", 900).await;
    let topics: Vec<(String, Utility)> = Utility::ALL.iter().map(|&u| (utility_topic("uncommitted", u), u)).collect();
    let names: Vec<String> = topics.iter().map(|(topic, _)| topic.clone()).collect();
    let consumer = backend.log.consumer("uncommitted.archive", &names).unwrap();
    let spec = ArchiveSpec { url: master.location().to_owned(), roll_bytes: 41 * 1_000_000, roll_secs: 3_600 };
    let mut dying =
        Archiver::new(master.clone(), Box::new(CommitsFail(consumer)), topics, settings(spec), "uncommitted.archive".into());
    while !dying.step().await.unwrap() {}
    assert!(dying.finish().await.is_err(), "the commit fails after the upload");
    drop(dying);
    let (before, _) = archived(directory.path());
    assert!(!before.is_empty(), "the dying archiver uploaded files");
    // The next archiver rolls far more often: without the intent its files
    // would start at other offsets and repeat the uploaded readings.
    drain(archiver(backend.log.as_ref(), "uncommitted", &master, 37), directory.path(), valid).await;
    let (after, rows) = archived(directory.path());
    assert!(after.values().all(|&copies| copies == 1), "no reading twice");
    assert!(before.keys().all(|key| after.contains_key(key)));
    assert_eq!(rows, valid);
}
