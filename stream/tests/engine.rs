//! The engine suite: the processor against the ports, end to end through the
//! log and the serving store. Every test runs twice: on the embedded adapters
//! and on Kafka + Redis (see `auth_testkit`).

use std::sync::Arc;
use std::time::Duration;

use auth_core::ports::{
    MeterLastReading, PartitionFlush, PortError, ReadingLog, RegionWindow, ServingStore, StoredWindow, TopicPartition, WindowSlot,
};
use auth_core::spec::{PipelineSpec, SimulatorSpec};
use auth_core::{CustomerKind, Reading, Region, Utility, codec, dead_letter_topic, partition_for, utility_topic};
use auth_testkit::{Backend, Dump, dump, read_topic};
use auth_ingest::{LogSink, ReadingSink, Simulated, Simulator};
use auth_stream::{PartitionCounts, Processor, ProcessorConfig};
use bytes::Bytes;

const MINUTE: i64 = 60_000;
/// 2026-11-28T00:00:00Z.
const T0: i64 = 1_795_824_000_000;

macro_rules! engine_suite {
    ($name:ident, $backend:expr $(, #[$attribute:meta])*) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn scripted_fleet_gives_exactly_the_expected_windows() {
                super::scripted_fleet_gives_exactly_the_expected_windows(&$backend("scripted")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn a_crash_after_a_checkpoint_changes_nothing() {
                super::a_crash_after_a_checkpoint_changes_nothing(&$backend("crash")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn a_failed_checkpoint_load_orphans_no_partition() {
                super::a_failed_checkpoint_load_orphans_no_partition(&$backend("flaky")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn a_reading_dated_ahead_is_quarantined_and_makes_no_honest_reading_late() {
                super::a_reading_dated_ahead_is_quarantined_and_makes_no_honest_reading_late(&$backend("ahead")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn a_concentrator_upload_is_on_time_for_its_meter_and_changes_no_other() {
                super::a_concentrator_upload_is_on_time_for_its_meter_and_changes_no_other(&$backend("upload")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn a_quiet_partition_closes_its_windows_after_the_idle_timeout() {
                super::a_quiet_partition_closes_its_windows_after_the_idle_timeout(&$backend("quiet")).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attribute])*
            async fn two_processors_in_one_group_equal_one() {
                super::two_processors_in_one_group_equal_one(&$backend("pair")).await;
            }
        }
    };
}

engine_suite!(embedded, Backend::embedded);
engine_suite!(kafka_redis, Backend::real, #[ignore = "needs Kafka and Redis: scripts/test.sh runs it"]);

fn spec(partitions: u32) -> PipelineSpec {
    let mut spec = PipelineSpec::default();
    spec.log.partitions = partitions;
    spec.windows.sizes_secs = vec![60, 3_600];
    // A partition that receives nothing closes its windows on the wall clock;
    // these tests compare runs made minutes apart, so none may go quiet.
    spec.windows.idle_timeout_secs = 3_600;
    spec
}

/// A config whose processor only flushes when the test says so.
fn manual_config(backend: &Backend, spec: &PipelineSpec, max_poll_records: usize) -> ProcessorConfig {
    ProcessorConfig {
        flush_interval: Duration::from_secs(3_600),
        checkpoint_interval: Duration::from_secs(3_600),
        max_poll_records,
        ..ProcessorConfig::from_spec(&backend.pipeline, spec)
    }
}

async fn create_topics(backend: &Backend, spec: &PipelineSpec) {
    let log = backend.log.as_ref();
    for utility in Utility::ALL {
        log.ensure_topic(&utility_topic(&backend.pipeline, utility), spec.log.partitions).await.expect("topic");
    }
    log.ensure_topic(&dead_letter_topic(&backend.pipeline), 1).await.expect("dlq topic");
}

fn reading(customer_id: u64, region: &str, ts_ms: i64, value: f64) -> Reading {
    Reading {
        meter_id: customer_id * 4,
        customer_id,
        utility: Utility::Electricity,
        region: Region::from_code(region).expect("known region"),
        customer_kind: CustomerKind::Residential,
        ts_ms,
        value,
        cumulative: false,
    }
}

/// Every record of a topic, read by a group of its own up to the end offsets.
async fn read_all(log: &dyn ReadingLog, topic: &str, group: &str) -> Vec<Bytes> {
    read_topic(log, topic, group).await.into_iter().map(|(_, record)| record.value).collect()
}

/// Steps every processor until each has joined the group, the group's
/// partitions are all owned and every one is processed to the log's end;
/// then checkpoints them all.
async fn drain_group(backend: &Backend, spec: &PipelineSpec, processors: &mut [&mut Processor]) {
    let log = backend.log.as_ref();
    let partitions = spec.log.partitions as usize * Utility::ALL.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "the group did not catch up");
        for processor in processors.iter_mut() {
            processor.step().await.expect("step");
        }
        let mut owned = 0;
        let mut caught_up = true;
        for processor in processors.iter() {
            owned += processor.positions().len();
            caught_up &= processor.caught_up(log).await.expect("lag");
        }
        if caught_up && owned == partitions {
            break;
        }
    }
    for processor in processors.iter_mut() {
        processor.flush(true).await.expect("final checkpoint");
    }
}

async fn scripted_fleet_gives_exactly_the_expected_windows(backend: &Backend) {
    let (log, store) = (&backend.log, backend.new_store().await);
    let spec = spec(2);
    create_topics(backend, &spec).await;
    let topic = utility_topic(&backend.pipeline, Utility::Electricity);
    let script: Vec<(Reading, &str)> = vec![
        (reading(1, "US-NY", T0 + 1_000, 1.0), "counted"),
        (reading(2, "US-NY", T0 + 2_000, 10.0), "counted"),
        (reading(1, "US-NY", T0 + 30_000, 2.0), "counted"),
        (reading(1, "US-NY", T0 + 20_000, 4.0), "counted, out of order"),
        (reading(1, "US-NY", T0 + 30_000, 2.0), "duplicate"),
        (reading(1, "US-NY", T0 + 95_000, 8.0), "counted; closes minute 0 for customer 1's partition"),
        (reading(1, "US-NY", T0 + 50_000, 16.0), "counted late, minute 0 re-emitted"),
        (reading(1, "US-NY", T0 + 200_000, 32.0), "counted; purges minute 0"),
        (reading(1, "US-NY", T0 + 10_000, 64.0), "too late"),
        (reading(3, "US-CA", T0 + 201_000, 100.0), "counted"),
    ];
    let records: Vec<_> = script
        .iter()
        .map(|(r, _)| auth_core::ports::OutRecord {
            partition: partition_for(r.customer_id, 2),
            key: Bytes::from(r.customer_id.to_string()),
            value: Bytes::copy_from_slice(&codec::encode(r)),
        })
        .chain([auth_core::ports::OutRecord { partition: 0, key: Bytes::from_static(b"9"), value: Bytes::from_static(b"\x01garbage") }])
        .collect();
    log.producer().expect("producer").send(&topic, records).await.expect("send");

    let mut processor = Processor::new(manual_config(backend, &spec, 3), log.as_ref(), Arc::clone(&store)).expect("processor");
    drain_group(backend, &spec, &mut [&mut processor]).await;

    let minutes = |customer| {
        let store = Arc::clone(&store);
        async move {
            store
                .customer_windows(customer)
                .await
                .expect("windows")
                .into_iter()
                .filter(|w| w.slot.width_ms == MINUTE)
                .map(|w| ((w.slot.start_ms - T0) / MINUTE, w.aggregate.sum, w.aggregate.count, w.closed))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(minutes(1).await, vec![(0, 23.0, 4, true), (1, 8.0, 1, true), (3, 32.0, 1, false)]);
    assert_eq!(minutes(2).await, vec![(0, 10.0, 1, false)]);
    assert_eq!(minutes(3).await, vec![(3, 100.0, 1, false)]);
    let hour = store.customer_windows(1).await.expect("windows").into_iter().find(|w| w.slot.width_ms == 3_600_000);
    assert_eq!(hour.map(|w| (w.aggregate.sum, w.aggregate.min, w.aggregate.max)), Some((63.0, 1.0, 32.0)));

    let new_york = Region::from_code("US-NY").expect("New York");
    let regions = store.region_windows(MINUTE, 0).await.expect("regions");
    let ny_minute_0 = regions
        .iter()
        .find(|w| w.region == new_york && w.window.slot == WindowSlot { width_ms: MINUTE, start_ms: T0 })
        .expect("New York minute 0");
    assert_eq!((ny_minute_0.window.aggregate.sum, ny_minute_0.window.aggregate.count), (33.0, 5));
    // Day windows are the regions' local days: T0 (UTC midnight) is the evening of the day before in the US.
    let day = store.region_windows(86_400_000, 0).await.expect("days");
    assert!(day.iter().all(|w| w.window.slot.start_ms == auth_core::local_day::day_start_ms(w.region, auth_core::local_day::date_of(w.region, T0))), "{day:?}");
    let total: f64 = day.iter().map(|w| w.window.aggregate.sum).sum();
    assert_eq!(total, 1.0 + 10.0 + 2.0 + 4.0 + 8.0 + 16.0 + 32.0 + 100.0, "today's totals over every region");

    let counts = processor.counts();
    assert_eq!((counts.duplicates, counts.too_late, counts.malformed, counts.counted_late), (1, 1, 1, 1));
    let in_log = read_all(log.as_ref(), &topic, "audit").await;
    let too_late = codec::encode(&script[8].0);
    assert!(in_log.iter().any(|value| value[..] == too_late[..]), "the too-late reading stays in the log");
    let letters = read_all(log.as_ref(), &dead_letter_topic(&backend.pipeline), "audit").await;
    assert_eq!(letters.len(), 1);
    let letter: serde_json::Value = serde_json::from_slice(&letters[0]).expect("dead letter is JSON");
    let before_garbage = script.iter().filter(|(r, _)| partition_for(r.customer_id, 2) == 0).count();
    assert_eq!((letter["partition"].as_u64(), letter["offset"].as_u64()), (Some(0), Some(before_garbage as u64)));
    assert!(letter["reason"].as_str().is_some_and(|reason| reason.contains("41")), "{letter}");
}

/// Sends `readings` to their partitions of the electricity topic, in order.
async fn send(backend: &Backend, partitions: u32, readings: &[Reading]) {
    let records = readings
        .iter()
        .map(|r| auth_core::ports::OutRecord {
            partition: partition_for(r.customer_id, partitions),
            key: Bytes::from(r.customer_id.to_string()),
            value: Bytes::copy_from_slice(&codec::encode(r)),
        })
        .collect();
    let topic = utility_topic(&backend.pipeline, Utility::Electricity);
    backend.log.producer().expect("producer").send(&topic, records).await.expect("send");
}

/// Customers whose readings go to partition 0 of `partitions`.
fn customers_of_partition_0(partitions: u32, count: usize) -> Vec<u64> {
    (1..).filter(|&customer| partition_for(customer, partitions) == 0).take(count).collect()
}

async fn minute_windows(store: &Arc<dyn ServingStore>, customer: u64) -> Vec<(i64, f64, u64, bool)> {
    store
        .customer_windows(customer)
        .await
        .expect("windows")
        .into_iter()
        .filter(|w| w.slot.width_ms == MINUTE)
        .map(|w| (w.slot.start_ms, w.aggregate.sum, w.aggregate.count, w.closed))
        .collect()
}

/// Written straight to the log (so past the gateway's check): one reading an
/// hour ahead of the clock, then honest readings of other meters of its partition.
async fn a_reading_dated_ahead_is_quarantined_and_makes_no_honest_reading_late(backend: &Backend) {
    let store = backend.new_store().await;
    let spec = spec(2);
    create_topics(backend, &spec).await;
    let customers = customers_of_partition_0(2, 11);
    let now = auth_core::now_ms();
    let mut readings = vec![reading(customers[0], "US-NY", now + 3_600_000, 7.0)];
    readings.extend(customers[1..].iter().map(|&customer| reading(customer, "US-NY", now - 5_000, 1.0)));
    send(backend, 2, &readings).await;
    let mut processor = Processor::new(manual_config(backend, &spec, 100), backend.log.as_ref(), Arc::clone(&store)).expect("processor");
    drain_group(backend, &spec, &mut [&mut processor]).await;

    let counts = processor.counts();
    assert_eq!((counts.counted, counts.too_late, counts.quarantined), (10, 0, 1), "{counts:?}");
    for &customer in &customers[1..] {
        let windows = minute_windows(&store, customer).await;
        assert_eq!(windows.len(), 1, "customer {customer}: {windows:?}");
        assert_eq!((windows[0].1, windows[0].2), (1.0, 1));
    }
    assert!(store.customer_windows(customers[0]).await.expect("windows").is_empty(), "the reading ahead counts nowhere");
    let meters: Vec<u64> = store.meters_silent_since(i64::MAX, 0, 100).await.expect("meters").iter().map(|m| m.meter_id).collect();
    assert_eq!(meters, customers[1..].iter().map(|customer| customer * 4).collect::<Vec<_>>(), "nor as its meter's last reading");
    let letters = read_all(backend.log.as_ref(), &dead_letter_topic(&backend.pipeline), "audit").await;
    assert_eq!(letters.len(), 1);
    let letter: serde_json::Value = serde_json::from_slice(&letters[0]).expect("dead letter is JSON");
    let reason = letter["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("ahead of the receiver's clock") && reason.contains("windows.maxClockAheadSecs"), "{letter}");
}

/// Meter 9's concentrator uploads six hours of its readings while the other
/// meters of its partition are live.
async fn a_concentrator_upload_is_on_time_for_its_meter_and_changes_no_other(backend: &Backend) {
    let spec = spec(2);
    create_topics(backend, &spec).await;
    let live: Vec<u64> = customers_of_partition_0(2, 4);
    let uploader = live[3];
    let live = &live[..3];
    // New York's local day starts at 05:00 UTC: the upload is its first six hours.
    let upload_start = T0 + 5 * 60 * MINUTE;
    let live_start = T0 + 11 * 60 * MINUTE;
    let live_minute = |minute: i64| live.iter().map(move |&c| reading(c, "US-NY", live_start + minute * MINUTE, 1.0));
    let first_half: Vec<Reading> = (0..30).flat_map(live_minute).collect();
    let upload: Vec<Reading> = (0..24).map(|quarter| reading(uploader, "US-NY", upload_start + quarter * 15 * MINUTE, 2.0)).collect();
    let second_half: Vec<Reading> = (30..60).flat_map(live_minute).collect();
    send(backend, 2, &first_half).await;
    send(backend, 2, &upload).await;
    send(backend, 2, &second_half).await;

    let store = backend.new_store().await;
    let mut processor = Processor::new(manual_config(backend, &spec, 50), backend.log.as_ref(), Arc::clone(&store)).expect("processor");
    drain_group(backend, &spec, &mut [&mut processor]).await;
    assert_eq!(processor.counts().too_late, 0, "nothing of the upload is too late: {:?}", processor.counts());
    let uploaded = minute_windows(&store, uploader).await;
    assert_eq!(uploaded.len(), 24, "{uploaded:?}");
    let expected_upload: Vec<(i64, f64, u64, bool)> =
        (0..24).map(|quarter| (upload_start + quarter * 15 * MINUTE, 2.0, 1, quarter < 23)).collect();
    assert_eq!(uploaded, expected_upload, "its own watermark closed all but the newest");
    let hours: Vec<f64> = store
        .customer_windows(uploader)
        .await
        .expect("windows")
        .into_iter()
        .filter(|w| w.slot.width_ms == 3_600_000)
        .map(|w| w.aggregate.sum)
        .collect();
    assert_eq!(hours, vec![8.0; 6], "six hours of four readings each");

    // The live meters' windows are what their own readings make, as without the upload.
    let expected: Vec<(i64, f64, u64, bool)> =
        (0..60).map(|minute| (live_start + minute * MINUTE, 1.0, 1, minute < 58)).collect();
    for &customer in live {
        assert_eq!(minute_windows(&store, customer).await, expected, "customer {customer}");
    }
    let new_york = Region::from_code("US-NY").expect("New York");
    let region_hours: Vec<(i64, f64)> = store
        .region_windows(3_600_000, 0)
        .await
        .expect("regions")
        .into_iter()
        .filter(|w| w.region == new_york)
        .map(|w| ((w.window.slot.start_ms - T0) / 3_600_000, w.window.aggregate.sum))
        .collect();
    assert_eq!(
        region_hours,
        vec![(10, 8.0), (11, 180.0)],
        "the hour within the region lateness takes the upload; older hours are left to the batch"
    );
    let mut last_readings = vec![MeterLastReading { meter_id: uploader * 4, ts_ms: upload_start + 23 * 15 * MINUTE }];
    last_readings.extend(live.iter().map(|&customer| MeterLastReading { meter_id: customer * 4, ts_ms: live_start + 59 * MINUTE }));
    assert_eq!(store.meters_silent_since(i64::MAX, 0, 100).await.expect("meters"), last_readings, "each meter's newest reading, the oldest first");
}

async fn a_quiet_partition_closes_its_windows_after_the_idle_timeout(backend: &Backend) {
    let store = backend.new_store().await;
    let mut spec = spec(2);
    spec.windows.idle_timeout_secs = 1;
    create_topics(backend, &spec).await;
    let customers = customers_of_partition_0(2, 5);
    let readings: Vec<Reading> = customers.iter().map(|&customer| reading(customer, "US-NY", T0 + 5_000, 1.0)).collect();
    send(backend, 2, &readings).await;
    let mut processor = Processor::new(manual_config(backend, &spec, 100), backend.log.as_ref(), Arc::clone(&store)).expect("processor");
    drain_group(backend, &spec, &mut [&mut processor]).await;
    for &customer in &customers {
        assert_eq!(minute_windows(&store, customer).await, vec![(T0, 1.0, 1, false)], "open while the partition is live");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        processor.step().await.expect("step");
        processor.flush(false).await.expect("flush");
        let closed = minute_windows(&store, customers[0]).await.iter().all(|window| window.3);
        if closed {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the quiet partition's windows did not close");
    }
    for &customer in &customers {
        assert_eq!(minute_windows(&store, customer).await, vec![(T0, 1.0, 1, true)], "closed after the idle timeout");
    }
    let regions = store.region_windows(MINUTE, 0).await.expect("regions");
    let new_york = regions.iter().find(|w| w.window.slot.start_ms == T0).expect("New York's minute");
    assert!(new_york.window.closed && new_york.window.aggregate.count == 5, "{new_york:?}");
}

/// The simulated fleet's readings of `minutes`; every third meter is
/// cumulative: it sends a register that grows with its readings' event
/// times (so repeated, late and disordered readings stay consistent; its
/// malformed readings stay malformed).
async fn load_simulated(backend: &Backend, spec: &PipelineSpec, minutes: i64) -> u64 {
    create_topics(backend, spec).await;
    let mut simulator = Simulator::new(&spec.simulator, T0);
    let mut sink = LogSink::new(backend.log.producer().expect("producer"), &backend.pipeline, spec.log.partitions);
    let mut written = 0;
    let mut batch: Vec<Simulated> = Vec::new();
    while simulator.event_time_ms() < T0 + minutes * MINUTE {
        batch.clear();
        simulator.fill(&mut batch, 1_000);
        for simulated in &mut batch {
            if let Simulated::Reading(reading) = simulated
                && reading.meter_id % 3 == 0
                && reading.value >= 0.0
            {
                reading.cumulative = true;
                reading.value = 1_000.0 + (reading.ts_ms - T0) as f64 / 1_000.0 * (1 + reading.meter_id % 4) as f64;
            }
        }
        sink.write(&batch).await.expect("write");
        written += batch.len() as u64;
    }
    written
}

fn knobbed_spec() -> PipelineSpec {
    let mut spec = spec(3);
    spec.simulator = SimulatorSpec {
        customers: 150,
        seed: 11,
        out_of_order_share: 0.05,
        late_share: 0.01,
        late_secs: 200,
        duplicate_share: 0.02,
        malformed_share: 0.005,
        ..SimulatorSpec::default()
    };
    spec
}

/// One processor over the whole log into a fresh store: what every other run must equal.
async fn reference_run(backend: &Backend, spec: &PipelineSpec, max_poll_records: usize) -> (Dump, PartitionCounts) {
    let store = backend.new_store().await;
    let config = manual_config(backend, spec, max_poll_records);
    let mut reference = Processor::new(config, backend.log.as_ref(), Arc::clone(&store)).expect("processor");
    drain_group(backend, spec, &mut [&mut reference]).await;
    (dump(store.as_ref(), &spec.windows.effective_sizes_ms()).await, reference.counts())
}

async fn a_crash_after_a_checkpoint_changes_nothing(backend: &Backend) {
    let spec = knobbed_spec();
    let widths = spec.windows.effective_sizes_ms();
    let log = &backend.log;
    load_simulated(backend, &spec, 20).await;
    let (expected, expected_counts) = reference_run(backend, &spec, 400).await;
    assert!(expected.len() > 1_000, "the run produced windows: {}", expected.len());
    assert!(expected_counts.too_late > 0 && expected_counts.duplicates > 0 && expected_counts.malformed > 0);

    let mut rng = fastrand::Rng::with_seed(5);
    for run in 0..5 {
        let store = backend.new_store().await;
        let group_config = ProcessorConfig { group: format!("{}-crash-{run}", backend.pipeline), ..manual_config(backend, &spec, 400) };
        let mut processor = Processor::new(group_config.clone(), log.as_ref(), Arc::clone(&store)).expect("processor");
        let cut_after = rng.usize(3..60);
        let checkpoint_every = rng.usize(2..7);
        for step in 1..=cut_after {
            processor.step().await.expect("step");
            processor.flush(step % checkpoint_every == 0).await.expect("flush");
        }
        // Abrupt stop: whatever happened since the last checkpoint is lost.
        drop(processor);
        let mut restarted = Processor::new(group_config, log.as_ref(), Arc::clone(&store)).expect("processor");
        drain_group(backend, &spec, &mut [&mut restarted]).await;
        let actual = dump(store.as_ref(), &widths).await;
        assert_eq!(actual.len(), expected.len(), "run {run}, cut after step {cut_after}");
        assert!(actual == expected, "run {run}: serving store differs after a crash at step {cut_after}");
        assert_eq!(restarted.counts(), expected_counts, "run {run}: counts differ");
    }
}

async fn two_processors_in_one_group_equal_one(backend: &Backend) {
    let spec = knobbed_spec();
    let widths = spec.windows.effective_sizes_ms();
    let log = &backend.log;
    load_simulated(backend, &spec, 10).await;
    let (expected, _) = reference_run(backend, &spec, 500).await;

    let store = backend.new_store().await;
    let config = ProcessorConfig { group: format!("{}-pair", backend.pipeline), ..manual_config(backend, &spec, 500) };
    let mut first = Processor::new(config.clone(), log.as_ref(), Arc::clone(&store)).expect("processor");
    let mut second = Processor::new(config, log.as_ref(), Arc::clone(&store)).expect("processor");
    drain_group(backend, &spec, &mut [&mut first, &mut second]).await;
    assert!(!first.positions().is_empty() && !second.positions().is_empty(), "both got partitions");
    assert!(dump(store.as_ref(), &widths).await == expected, "two processors give the same windows as one");
}

/// A serving store whose checkpoint load of one partition fails once, as a
/// Redis that is restarting would.
struct FailsOneLoad {
    inner: Arc<dyn ServingStore>,
    failing: TopicPartition,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl ServingStore for FailsOneLoad {
    async fn claim(&self, partition: &TopicPartition) -> auth_core::ports::Result<u64> {
        self.inner.claim(partition).await
    }
    async fn apply(&self, flush: PartitionFlush) -> auth_core::ports::Result<()> {
        self.inner.apply(flush).await
    }
    async fn restate(&self, restatement: auth_core::ports::Restatement) -> auth_core::ports::Result<()> {
        self.inner.restate(restatement).await
    }
    async fn load_checkpoint(&self, partition: &TopicPartition) -> auth_core::ports::Result<Option<Bytes>> {
        if *partition == self.failing && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(PortError::Unavailable { what: format!("checkpoint of {partition}"), message: "the test's outage".into() });
        }
        self.inner.load_checkpoint(partition).await
    }
    async fn load_progress(&self, partition: &TopicPartition) -> auth_core::ports::Result<Option<auth_core::ports::StreamProgress>> {
        self.inner.load_progress(partition).await
    }
    async fn customer_windows(&self, customer_id: u64) -> auth_core::ports::Result<Vec<StoredWindow>> {
        self.inner.customer_windows(customer_id).await
    }
    async fn region_windows(&self, width_ms: i64, since_ms: i64) -> auth_core::ports::Result<Vec<RegionWindow>> {
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

async fn a_failed_checkpoint_load_orphans_no_partition(backend: &Backend) {
    let spec = knobbed_spec();
    let widths = spec.windows.effective_sizes_ms();
    load_simulated(backend, &spec, 10).await;
    let (expected, expected_counts) = reference_run(backend, &spec, 500).await;

    let inner = backend.new_store().await;
    // The first partition restored: the ones after it in the same assignment
    // must not be left out while it waits for its retry.
    let failing = TopicPartition::new(&utility_topic(&backend.pipeline, Utility::Electricity), 0);
    let flaky = Arc::new(FailsOneLoad { inner: Arc::clone(&inner), failing: failing.clone(), failed: Default::default() });
    let config = ProcessorConfig { group: format!("{}-flaky", backend.pipeline), ..manual_config(backend, &spec, 500) };
    let mut processor = Processor::new(config, backend.log.as_ref(), flaky.clone()).expect("processor");
    let log = backend.log.as_ref();
    let mut saw_unrestored = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "the processor did not catch up");
        processor.step().await.expect("a failed load is retried, not an error");
        if processor.unrestored() > 0 {
            saw_unrestored = true;
            assert!(!processor.caught_up(log).await.expect("lag"), "an unrestored partition is never caught up");
        }
        if processor.caught_up(log).await.expect("lag") {
            break;
        }
    }
    processor.flush(true).await.expect("final checkpoint");
    assert!(flaky.failed.load(std::sync::atomic::Ordering::SeqCst), "the load of {failing} failed once");
    assert!(saw_unrestored, "the partition waited for its retry");
    let owned: Vec<TopicPartition> = processor.positions().into_iter().map(|(partition, _)| partition).collect();
    assert_eq!(owned.len(), spec.log.partitions as usize * Utility::ALL.len(), "every partition is processed: {owned:?}");
    assert_eq!(processor.lag(log).await.expect("lag"), 0);
    assert!(dump(inner.as_ref(), &widths).await == expected, "the windows equal a run without the failure");
    assert_eq!(processor.counts(), expected_counts);
}
