//! Restatement against the live stream, on Kafka and Redis: a processor is
//! paused before midnight (local midnight: days are the customers' local
//! days, and the tests' times are ten hours past UTC's so that every US
//! region's day of 2026-11-28 is under way), the day passes, the archiver and the batch
//! restate it, and the processor resumes from its older checkpoint and closes
//! the day's windows with the stream's (different) totals. The day in Redis
//! must end as the batch computed it.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use auth_batch::{BatchJob, DayInputs};
use auth_batch::settle::{Archived, archived};
use auth_core::local_day;
use auth_core::ports::{Aggregate, OutRecord, ServingStore};
use auth_core::{CustomerKind, Reading, Region, Utility, codec, partition_for, utility_topic};
use bytes::Bytes;
use auth_master::MasterStore;
use common::{T0, TestPipeline, stop};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY_MS: i64 = 86_400_000;

/// Customers of the late upload, one reading each.
const LATE_CUSTOMERS: u64 = 25;

/// One electricity reading of each of the first customers at `ts_ms`, straight into the log.
async fn too_late_upload(pipeline: &TestPipeline, ts_ms: i64) {
    let topic = utility_topic(pipeline.name(), Utility::Electricity);
    let records = (1..=LATE_CUSTOMERS)
        .map(|customer_id| {
            let reading = Reading {
                meter_id: customer_id * 4,
                customer_id,
                utility: Utility::Electricity,
                region: Region::from_index(0).unwrap(),
                customer_kind: CustomerKind::Residential,
                ts_ms,
                value: 0.75,
                cumulative: false,
            };
            OutRecord {
                partition: partition_for(customer_id, pipeline.spec.log.partitions),
                key: Bytes::from(customer_id.to_string()),
                value: Bytes::copy_from_slice(&codec::encode(&reading)),
            }
        })
        .collect();
    pipeline.backend.log.producer().unwrap().send(&topic, records).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Redis: scripts/test.sh runs it"]
async fn a_restated_day_stays_restated_when_a_paused_processor_resumes() {
    let pipeline = TestPipeline::new("midnight");
    let store = pipeline.store().await;
    let date = auth_master::parse_date("2026-11-28").unwrap();
    let midnight = T0 + DAY_MS + 10 * HOUR;
    pipeline.produce(60_000, midnight - 4 * HOUR);
    let processor = pipeline.start_stream("processor");
    pipeline.wait_for_checkpoints_at_end(&store, Duration::from_secs(120)).await;

    // Paused before midnight (past its session timeout, so it comes back
    // from its checkpoint); the rest of the day arrives meanwhile, then the
    // next day, then a concentrator's upload of the day's last minute, too
    // late for the stream (left to the batch).
    processor.signal("STOP");
    pipeline.produce(60_000, midnight - 2 * HOUR);
    pipeline.produce(60_000, midnight + 10 * MINUTE);
    // The upload's customers are Alaskan; Alaska's day ends an hour before Hawaii's, the last.
    let alaska_midnight = local_day::day_range(Region::from_index(0).unwrap(), date).end;
    assert_eq!(alaska_midnight, midnight - HOUR);
    too_late_upload(&pipeline, alaska_midnight - MINUTE / 2).await;

    // The archiver writes it all; then the batch restates 2026-11-28.
    let master = MasterStore::open(&pipeline.spec.archive.url).unwrap();
    let topics: Vec<String> = pipeline.spec.utilities.iter().map(|&utility| utility_topic(pipeline.name(), utility)).collect();
    let archiver = pipeline.start_archive("archiver");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match archived(pipeline.backend.log.as_ref(), &master, &topics, Duration::ZERO).await.unwrap() {
            Archived::Before(_) => break,
            behind => assert!(Instant::now() < deadline, "the archiver did not reach the log's end within 120 s: {behind:?}\n{}", pipeline.log_tails()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop(archiver, &pipeline, "archiver");
    let output = pipeline.batch("2026-11-28");
    assert!(output.contains("restated") && !output.contains("not restated"), "the day is restated: {output}");

    let outputs = BatchJob::new(master, 256 * 1024 * 1024).compute(date, &pipeline.spec.utilities, DayInputs::new(date)).await.unwrap();
    let slot_start = |region: Region| local_day::day_start_ms(region, date);
    let day_of = |windows: &[auth_core::ports::StoredWindow], utility, region| {
        windows
            .iter()
            .find(|window| window.utility == utility && window.slot.width_ms == DAY_MS && window.slot.start_ms == slot_start(region))
            .map(|window| window.aggregate)
    };

    // What the stream alone makes of the day differs from the batch (the
    // late readings), so a write of the stream's over the restatement shows.
    let (reference, reference_counts) = pipeline.reference().await;
    let stream_only: Vec<_> = outputs
        .customers
        .iter()
        .filter_map(|day| {
            let key = format!("customer {} {} {:?}", day.customer_id, day.utility, auth_core::ports::WindowSlot { width_ms: DAY_MS, start_ms: slot_start(day.region) });
            let streamed = reference.get(&key).map(|&(sum, count, ..)| (f64::from_bits(sum), count));
            (streamed != Some((day.total, day.readings))).then_some((day.customer_id, day.region, day.total, day.readings, streamed))
        })
        .collect();
    assert_eq!(
        stream_only.len(),
        LATE_CUSTOMERS as usize,
        "the late upload's customers differ between the stream and the batch; (customer, region, batch total and count, stream's): {:?}",
        &stream_only[..stream_only.len().min(5)]
    );
    assert_eq!(reference_counts.too_late, LATE_CUSTOMERS, "{reference_counts:?}");

    processor.signal("CONT");
    pipeline.wait_for_checkpoints_at_end(&store, Duration::from_secs(120)).await;
    let log = pipeline.read_log("processor");
    assert!(
        log.contains("partitions lost") || log.contains("fenced off"),
        "the processor learnt that its session expired and came back from its checkpoint\n{}",
        pipeline.log_tails()
    );
    stop(processor, &pipeline, "processor");

    let mut differing = Vec::new();
    let mut regions: BTreeMap<(Region, Utility), Aggregate> = BTreeMap::new();
    for day in &outputs.customers {
        let windows = store.customer_windows(day.customer_id).await.unwrap();
        let served = day_of(&windows, day.utility, day.region);
        if served.map(|aggregate| (aggregate.sum, aggregate.count)) != Some((day.total, day.readings)) {
            differing.push((day.customer_id, day.utility, day.total, day.readings, served));
        }
        let aggregate = Aggregate { sum: day.total, count: day.readings, min: day.min_value, max: day.max_value };
        regions.entry((day.region, day.utility)).and_modify(|total| total.merge(&aggregate)).or_insert(aggregate);
    }
    assert!(differing.is_empty(), "{} customers' day is not the batch's, e.g. {:?}", differing.len(), &differing[..differing.len().min(5)]);
    let served_regions = store.region_windows(DAY_MS, T0).await.unwrap();
    for ((region, utility), expected) in regions {
        let served = served_regions
            .iter()
            .find(|window| window.region == region && window.window.utility == utility && window.window.slot.start_ms == slot_start(region))
            .map(|window| (window.window.aggregate.sum, window.window.aggregate.count));
        assert_eq!(served, Some((expected.sum, expected.count)), "{region} {utility}: the region's day is the batch's");
    }
}
