//! The batch job on a known set of readings: exact rows in SQLite, and under
//! `AUTH_IT=1` in PostgreSQL and MariaDB and from master data on S3.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use std::time::Duration;

use auth_batch::settle::{ArchiveWatch, Archived, archived};
use auth_batch::{
    BatchError, BatchJob, CustomerDay, DayError, DayOutputs, EditedInterval, EstimatedRun, EstimationMethod, MeterGap, Reconciliation, RegionHour, Restatement, ResultsDb,
    Serving, SuspectInterval, SuspectRule, TopCustomer, UtilityTotal, run_day,
};
use auth_core::registry::{Installation, MeterUnit, RegisterKind, Registry};
use auth_results::{AuditAction, IntervalEdit};
use auth_core::ports::{
    Aggregate, OutRecord, PartitionFlush, PortError, ServingStore, TopicPartition, WindowOwner, WindowSlot, WindowUpdate,
};
use auth_core::{ArchiveSpec, CustomerKind, PipelineSpec, Reading, Region, Utility, codec, partition_for, utility_topic};
use auth_master::archiver::Archiver;
use bytes::Bytes;
use auth_embedded::MemoryStore;
use auth_master::{MasterStore, ReadingsBuilder, file_path, parse_date};
use chrono::NaiveDate;

/// 2026-11-27T00:00 in California (PST, 08:00Z): the tests' times are
/// California's clock. Texas's day starts two hours before it, so a Texan
/// reading at `DAY_START_MS` + h falls in hour h + 2 of its local day.
const DAY_START_MS: i64 = 1_795_766_400_000;
const HOUR_MS: i64 = 3_600_000;
const PARTITIONS: u32 = 4;

fn date() -> NaiveDate {
    parse_date("2026-11-27").unwrap()
}

fn region(code: &str) -> Region {
    Region::from_code(code).unwrap()
}

fn reading(customer_id: u64, utility: Utility, code: &str, ts_ms: i64, value: f64) -> Reading {
    Reading {
        meter_id: customer_id * 4 + utility.index() as u64,
        customer_id,
        utility,
        region: region(code),
        customer_kind: CustomerKind::Residential,
        ts_ms,
        value,
        cumulative: false,
    }
}

async fn write(master: &MasterStore, utility: Utility, date: NaiveDate, partition: u32, first_offset: u64, readings: &[Reading]) {
    let mut builder = ReadingsBuilder::default();
    for (index, reading) in readings.iter().enumerate() {
        builder.push(reading, first_offset + index as u64);
    }
    let mut file = master.create(&file_path(utility, date, partition, first_offset)).unwrap();
    file.write(&builder.finish().unwrap()).await.unwrap();
    file.close().await.unwrap();
}

/// Customer 1 (US-CA): electricity 10 + 5 in hour 0 and 20 in hour 13 (sent
/// twice; the copy with the later offset says 99 and must not count), water
/// 100 in hour 2. Customer 2 (US-CA): electricity 7 in hour 13, 8 in hour 14.
/// Customer 3 (US-TX): electricity 1.5 in hour 5. A reading of the next day
/// is in its own date's folder.
async fn known_readings(master: &MasterStore) {
    let electricity = Utility::Electricity;
    let at = |hour: i64, minute: i64| DAY_START_MS + hour * HOUR_MS + minute * 60_000;
    write(master, electricity, date(), 0, 0, &[
        reading(1, electricity, "US-CA", at(0, 5), 10.0),
        reading(1, electricity, "US-CA", at(0, 35), 5.0),
        reading(1, electricity, "US-CA", at(13, 0), 20.0),
        reading(3, electricity, "US-TX", at(5, 15), 1.5),
    ])
    .await;
    write(master, electricity, date(), 0, 10, &[reading(1, electricity, "US-CA", at(13, 0), 99.0)]).await;
    write(master, electricity, date(), 1, 0, &[
        reading(2, electricity, "US-CA", at(13, 30), 7.0),
        reading(2, electricity, "US-CA", at(14, 0), 8.0),
    ])
    .await;
    write(master, Utility::Water, date(), 2, 0, &[reading(1, Utility::Water, "US-CA", at(2, 0), 100.0)]).await;
    let next_day = date().succ_opt().unwrap();
    write(master, electricity, next_day, 0, 4, &[reading(1, electricity, "US-CA", at(24, 1), 1_000.0)]).await;
}

/// Customer 5's gas meter (US-TX, not registered) every 30 minutes from
/// 00:00: twelve readings of 2 (a frozen register), eight ordinary ones
/// (their 90th percentile with the twelve is 5) and a spike of 500 at 10:00.
fn flagged_gas() -> Vec<(i64, f64)> {
    let values = [2.0; 12].into_iter().chain([1.0, 3.0, 1.0, 4.0, 2.0, 5.0, 3.0, 6.0, 500.0]);
    values.enumerate().map(|(index, value)| (DAY_START_MS + index as i64 * 30 * 60_000, value)).collect()
}

async fn flagged_readings(master: &MasterStore) {
    let readings: Vec<Reading> =
        flagged_gas().into_iter().map(|(ts_ms, value)| reading(5, Utility::Gas, "US-TX", ts_ms, value)).collect();
    write(master, Utility::Gas, date(), 3, 0, &readings).await;
}

/// Customer's meter of `utility` (customer × 4 + the utility's index),
/// residential, installed for good, reading every `interval_secs`.
fn installed(customer_id: u64, utility: Utility, code: &str, interval_secs: u32) -> Installation {
    Installation {
        meter_id: customer_id * 4 + utility.index() as u64,
        customer_id,
        premise_id: format!("P{customer_id}"),
        region: region(code),
        utility,
        customer_kind: CustomerKind::Residential,
        unit: MeterUnit::of(utility),
        multiplier: 1.0,
        register: RegisterKind::Interval,
        interval_secs,
        valid_from_ms: 0,
        valid_to_ms: None,
        plausible_min: None,
        plausible_max: None,
        register_rollover: None,
    }
}

/// The registry of the known readings' meters: customer 1's electricity
/// meter and customer 2's read every 30 minutes, customer 3's once a day,
/// customer 1's water meter hourly (counting m3, at most 0.05 m3 an hour
/// plausibly); customer 4's electricity meter (US-TX) sends nothing.
fn known_registry() -> Registry {
    let mut registry = Registry::default();
    for installation in [
        installed(1, Utility::Electricity, "US-CA", 1_800),
        installed(2, Utility::Electricity, "US-CA", 1_800),
        installed(3, Utility::Electricity, "US-TX", 86_400),
        Installation { unit: MeterUnit::CubicMetre, plausible_max: Some(0.05), ..installed(1, Utility::Water, "US-CA", 3_600) },
        installed(4, Utility::Electricity, "US-TX", 1_800),
    ] {
        registry.set_meter(installation.meter_id, vec![installation]);
    }
    registry
}

/// A customer's known day; all of it is before UTC midnight (16:00 in
/// California), in the UTC date the day starts on.
fn customer(utility: Utility, customer_id: u64, code: &str, totals: (f64, f64, f64, u64), peak: (u8, f64), intervals: (u64, u64)) -> CustomerDay {
    let (total, min_value, max_value, readings) = totals;
    CustomerDay {
        utility,
        customer_id,
        region: region(code),
        total,
        min_value,
        max_value,
        readings,
        peak_hour: peak.0,
        peak_hour_total: peak.1,
        first_utc_date_total: total,
        first_utc_date_readings: readings,
        expected_intervals: intervals.0,
        received_intervals: intervals.1,
        suspect_intervals: 0,
        edited_intervals: 0,
        estimated_intervals: 0,
    }
}

/// The known readings' day with customer 5's flagged gas: its readings all
/// count, thirteen of them flagged, and customer 1's water reading above its plausible bound.
fn expected() -> DayOutputs {
    let (e, g, w) = (Utility::Electricity, Utility::Gas, Utility::Water);
    let hour = |utility, code: &str, hour, total, readings, customers| RegionHour { utility, region: region(code), hour, total, readings, customers };
    let top = |utility, code: &str, position, customer_id, total| TopCustomer { utility, region: region(code), position, customer_id, total };
    DayOutputs {
        customers: vec![
            customer(e, 1, "US-CA", (35.0, 5.0, 20.0, 3), (13, 20.0), (48, 3)),
            customer(e, 2, "US-CA", (15.0, 7.0, 8.0, 2), (14, 8.0), (48, 2)),
            customer(e, 3, "US-TX", (1.5, 1.5, 1.5, 1), (7, 1.5), (1, 1)),
            CustomerDay { suspect_intervals: 13, ..customer(g, 5, "US-TX", (549.0, 1.0, 500.0, 21), (12, 500.0), (0, 0)) },
            CustomerDay { suspect_intervals: 1, ..customer(w, 1, "US-CA", (100.0, 100.0, 100.0, 1), (2, 100.0), (24, 1)) },
        ],
        region_hours: {
            let mut hours = vec![
                hour(e, "US-CA", 0, 15.0, 2, 1),
                hour(e, "US-CA", 13, 27.0, 2, 2),
                hour(e, "US-CA", 14, 8.0, 1, 1),
                hour(e, "US-TX", 7, 1.5, 1, 1),
                hour(w, "US-CA", 2, 100.0, 1, 1),
                hour(g, "US-TX", 8, 4.0, 2, 1),
                hour(g, "US-TX", 9, 5.0, 2, 1),
                hour(g, "US-TX", 10, 7.0, 2, 1),
                hour(g, "US-TX", 11, 9.0, 2, 1),
                hour(g, "US-TX", 12, 500.0, 1, 1),
            ];
            hours.extend((2..8).map(|gas_hour| hour(g, "US-TX", gas_hour, 4.0, 2, 1)));
            hours.sort_by_key(|row| (row.utility, row.region, row.hour));
            hours
        },
        top_customers: {
            let mut tops = vec![
                top(e, "US-CA", 1, 1, 35.0),
                top(e, "US-CA", 2, 2, 15.0),
                top(e, "US-TX", 1, 3, 1.5),
                top(g, "US-TX", 1, 5, 549.0),
                top(w, "US-CA", 1, 1, 100.0),
            ];
            tops.sort_by_key(|row| (row.utility, row.region, row.position));
            tops
        },
        totals: vec![
            (e, UtilityTotal { total: 51.5, readings: 6, estimated: 0.0 }),
            (g, UtilityTotal { total: 549.0, readings: 21, estimated: 0.0 }),
            (w, UtilityTotal { total: 100.0, readings: 1, estimated: 0.0 }),
        ],
        meter_gaps: {
            let at = |hour: i64, minute: i64| Some(DAY_START_MS + hour * HOUR_MS + minute * 60_000);
            let gap = |utility: Utility, customer_id: u64, code: &str, interval_secs, expected, received, last_reading_ms| MeterGap {
                utility,
                meter_id: customer_id * 4 + utility.index() as u64,
                customer_id,
                region: region(code),
                interval_secs,
                expected_intervals: expected,
                received_intervals: received,
                last_reading_ms,
                estimated_intervals: 0,
            };
            vec![
                gap(e, 1, "US-CA", 1_800, 48, 3, at(13, 0)),
                gap(e, 2, "US-CA", 1_800, 48, 2, at(14, 0)),
                gap(e, 4, "US-TX", 1_800, 48, 0, None),
                gap(w, 1, "US-CA", 3_600, 24, 1, at(2, 0)),
            ]
        },
        suspect_intervals: {
            let gas = flagged_gas();
            let flagged = |(ts_ms, value): (i64, f64), rule| SuspectInterval {
                utility: g,
                meter_id: 5 * 4 + g.index() as u64,
                customer_id: 5,
                region: region("US-TX"),
                ts_ms,
                value,
                rule,
            };
            let mut flagged: Vec<SuspectInterval> =
                gas[..12].iter().map(|&reading| flagged(reading, SuspectRule::Frozen)).chain([flagged(gas[20], SuspectRule::Spike)]).collect();
            // 100 L of water in an hour, above the 0.05 m3 its installation allows.
            flagged.push(SuspectInterval {
                utility: w,
                meter_id: 4 + w.index() as u64,
                customer_id: 1,
                region: region("US-CA"),
                ts_ms: DAY_START_MS + 2 * HOUR_MS,
                value: 100.0,
                rule: SuspectRule::Range,
            });
            flagged
        },
        edited_intervals: Vec::new(),
        estimated_runs: Vec::new(),
    }
}

/// Customer 5's gas meter and customer 1's electricity meter (customer × 4 + the utility's index).
const GAS_METER: u64 = 21;
const ELECTRICITY_METER: u64 = 4;

/// An operator's edits of the known day: customer 5's spike of 500 is
/// edited to 5 and the first of its frozen readings approved; customer 1's
/// electricity meter gets 2.5 at 01:00, where it sent nothing.
async fn edit_known_day(database: &auth_results::Database) {
    let gas = flagged_gas();
    let edit = |utility, meter_id, customer_id, code: &str, ts_ms, value| IntervalEdit { utility, meter_id, ts_ms, customer_id, region: region(code), value };
    let edits = [
        edit(Utility::Gas, GAS_METER, 5, "US-TX", gas[20].0, Some(5.0)),
        edit(Utility::Electricity, ELECTRICITY_METER, 1, "US-CA", DAY_START_MS + HOUR_MS, Some(2.5)),
    ];
    database.record_interval_edits(&edits, "the spike is a register misread; the gap was read by hand", "ops", LATER_MS).await.unwrap();
    let approval = [edit(Utility::Gas, GAS_METER, 5, "US-TX", gas[0].0, None)];
    database.record_interval_edits(&approval, "checked on site", "ops", LATER_MS + 1).await.unwrap();
}

/// The known day after [`edit_known_day`].
fn edited() -> DayOutputs {
    let (e, g) = (Utility::Electricity, Utility::Gas);
    let gas = flagged_gas();
    let mut day = expected();
    day.customers[0] = CustomerDay { edited_intervals: 1, ..customer(e, 1, "US-CA", (37.5, 2.5, 20.0, 4), (13, 20.0), (48, 3)) };
    day.customers[3] =
        CustomerDay { suspect_intervals: 11, edited_intervals: 1, ..customer(g, 5, "US-TX", (54.0, 1.0, 6.0, 21), (11, 9.0), (0, 0)) };
    day.region_hours.push(RegionHour { utility: e, region: region("US-CA"), hour: 1, total: 2.5, readings: 1, customers: 1 });
    day.region_hours.sort_by_key(|row| (row.utility, row.region, row.hour));
    for row in &mut day.region_hours {
        if (row.utility, row.hour) == (g, 12) {
            row.total = 5.0;
        }
    }
    for top in &mut day.top_customers {
        top.total = match (top.utility, top.customer_id) {
            (Utility::Electricity, 1) => 37.5,
            (Utility::Gas, 5) => 54.0,
            _ => top.total,
        };
    }
    day.totals[0].1 = UtilityTotal { total: 54.0, readings: 7, estimated: 0.0 };
    day.totals[1].1 = UtilityTotal { total: 54.0, readings: 21, estimated: 0.0 };
    day.suspect_intervals.retain(|suspect| suspect.rule != SuspectRule::Spike && (suspect.utility, suspect.ts_ms) != (g, gas[0].0));
    let applied = |utility, meter_id, customer_id, code: &str, ts_ms, read_value, value| EditedInterval {
        utility,
        meter_id,
        customer_id,
        region: region(code),
        ts_ms,
        read_value,
        value,
    };
    day.edited_intervals = vec![
        applied(e, ELECTRICITY_METER, 1, "US-CA", DAY_START_MS + HOUR_MS, None, 2.5),
        applied(g, GAS_METER, 5, "US-TX", gas[20].0, Some(500.0), 5.0),
    ];
    day
}

const UTILITIES: [Utility; 3] = Utility::ALL;

/// `now` late enough for the day to have settled.
const LATER_MS: i64 = DAY_START_MS + 3 * 86_400_000;

async fn exact_rows_and_idempotent_reruns(master: MasterStore, database_url: &str) {
    known_readings(&master).await;
    flagged_readings(&master).await;
    let job = BatchJob::new(master, 256 * 1024 * 1024);
    let database = auth_results::Database::connect(database_url).await.unwrap();
    database.import_registry(&known_registry(), true, DAY_START_MS).await.unwrap();
    let results = ResultsDb::of(database.clone());
    let summary = run_day(&job, &results, None, date(), &UTILITIES, LATER_MS).await.unwrap();
    assert_eq!(summary.outputs, expected());
    let (stored, reconciliation) = results.day(date()).await.unwrap();
    assert_eq!(stored, expected(), "the rows in {database_url}");
    assert_eq!(reconciliation.iter().map(|row| (row.utility, row.stream_total, row.drift())).collect::<Vec<_>>(), vec![
        (Utility::Electricity, None, None),
        (Utility::Gas, None, None),
        (Utility::Water, None, None)
    ]);
    assert!(summary.restatements.is_empty(), "no serving store, no restatement");
    run_day(&job, &results, None, date(), &UTILITIES, LATER_MS).await.unwrap();
    assert_eq!(results.day(date()).await.unwrap().0, expected(), "a rerun leaves the same rows");
    // A change of the registry reaches the next run: the silent meter removed, its gap goes.
    let silent_meter = 4 * 4 + Utility::Electricity.index() as u64;
    database.remove_meters(&[silent_meter], LATER_MS).await.unwrap();
    let rerun = run_day(&job, &results, None, date(), &UTILITIES, LATER_MS).await.unwrap();
    let gaps: Vec<u64> = rerun.outputs.meter_gaps.iter().map(|gap| gap.meter_id).collect();
    assert_eq!(gaps, [4, 8, 6].to_vec(), "meter {silent_meter} is no longer expected");
    database.import_registry(&known_registry(), true, LATER_MS).await.unwrap();

    // An operator's edits apply at the next run, and every later run keeps them.
    edit_known_day(&database).await;
    run_day(&job, &results, None, date(), &UTILITIES, LATER_MS).await.unwrap();
    assert_eq!(results.day(date()).await.unwrap().0, edited(), "the edited day in {database_url}");
    run_day(&job, &results, None, date(), &UTILITIES, LATER_MS).await.unwrap();
    assert_eq!(results.day(date()).await.unwrap().0, edited(), "a recomputation keeps the edits");
    let audit: Vec<_> = database
        .audit_log(GAS_METER, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| (entry.action, entry.old_value, entry.new_value, entry.changed_by, entry.changed_at_ms))
        .collect();
    assert_eq!(audit, vec![
        (AuditAction::Approve, Some(2.0), None, "ops".to_owned(), LATER_MS + 1),
        (AuditAction::Edit, Some(500.0), Some(5.0), "ops".to_owned(), LATER_MS),
    ], "newest first; the values before are the readings the batch flagged");
    // Each run is recorded for the API's metrics; the rerun replaced the first.
    let run = auth_results::Database::connect(database_url).await.unwrap().last_batch_run().await.unwrap().expect("a run");
    assert!(run.finished_at_ms >= LATER_MS && run.finished_at_ms == LATER_MS + run.duration_ms, "{run:?}");
}

/// Customer 11's electricity meter reads every 5 minutes and customer 12's
/// every 15 (both US-CA); the estimation test's readings are theirs.
const FIVE_MINUTES: i64 = 300_000;
const QUARTER_HOUR: i64 = 900_000;

fn estimation_registry() -> Registry {
    let mut registry = Registry::default();
    for installation in [installed(11, Utility::Electricity, "US-CA", 300), installed(12, Utility::Electricity, "US-CA", 900)] {
        registry.set_meter(installation.meter_id, vec![installation]);
    }
    registry
}

/// Customer 12's readings of the quarter hours of `day_start_ms`'s day that `keep` keeps.
fn quarter_hours(day_start_ms: i64, value: f64, keep: impl Fn(i64) -> bool) -> Vec<Reading> {
    (0..96)
        .filter(|&quarter| keep(quarter))
        .map(|quarter| reading(12, Utility::Electricity, "US-CA", day_start_ms + quarter * QUARTER_HOUR, value))
        .collect()
}

/// The day: customer 11 reads 1 Wh every 5 minutes but misses 10:00 and
/// 10:05 (ten minutes), reading 4 at 10:10; customer 12 reads 2 Wh every
/// quarter hour but misses 06:00 to 11:45 (six hours). The same weekday one
/// and two weeks before, customer 12 read 1 and 2 every quarter hour.
async fn readings_with_gaps(master: &MasterStore) {
    let e = Utility::Electricity;
    let eleven: Vec<Reading> = (0..288)
        .filter(|slot| !(120..122).contains(slot))
        .map(|slot| reading(11, e, "US-CA", DAY_START_MS + slot * FIVE_MINUTES, if slot == 122 { 4.0 } else { 1.0 }))
        .collect();
    write(master, e, date(), 0, 0, &eleven).await;
    write(master, e, date(), 1, 0, &quarter_hours(DAY_START_MS, 2.0, |quarter| !(24..48).contains(&quarter))).await;
    for (weeks, value) in [(1u64, 1.0), (2, 2.0)] {
        let then = date().checked_sub_days(chrono::Days::new(7 * weeks)).unwrap();
        let start = DAY_START_MS - 7 * weeks as i64 * 86_400_000;
        write(master, e, then, 1, 0, &quarter_hours(start, value, |_| true)).await;
    }
}

async fn estimates_fill_gaps_and_late_readings_replace_them(master: MasterStore, database_url: &str) {
    readings_with_gaps(&master).await;
    let job = BatchJob::new(master.clone(), 256 * 1024 * 1024);
    let database = auth_results::Database::connect(database_url).await.unwrap();
    database.import_registry(&estimation_registry(), true, DAY_START_MS).await.unwrap();
    let results = ResultsDb::of(database);
    let store: Arc<dyn ServingStore> = Arc::new(MemoryStore::new(60));
    let serving = Serving { store: store.as_ref(), settle_ms: 0, archived: Archived::Before(LATER_MS) };
    let e = Utility::Electricity;
    let estimate = |customer_id: u64, from_ms, to_ms, intervals, total, method| EstimatedRun {
        utility: e,
        meter_id: customer_id * 4 + e.index() as u64,
        customer_id,
        region: region("US-CA"),
        from_ms,
        to_ms,
        intervals,
        total,
        method,
    };

    run_day(&job, &results, Some(&serving), date(), &[e], LATER_MS).await.unwrap();
    let (day, _) = results.day(date()).await.unwrap();
    let ten = DAY_START_MS + 10 * HOUR_MS;
    assert_eq!(day.estimated_runs, vec![
        estimate(11, ten, ten + 2 * FIVE_MINUTES, 2, 2.0 + 3.0, EstimationMethod::Interpolated),
        estimate(12, DAY_START_MS + 6 * HOUR_MS, DAY_START_MS + 12 * HOUR_MS, 24, 24.0 * 1.5, EstimationMethod::Profile),
    ], "in {database_url}");
    let totals: Vec<_> = day.customers.iter().map(|c| (c.customer_id, c.total, c.readings, c.received_intervals, c.estimated_intervals)).collect();
    assert_eq!(totals, vec![(11, 285.0 + 4.0 + 2.0 + 3.0, 286, 286, 2), (12, 72.0 * 2.0 + 24.0 * 1.5, 72, 72, 24)]);
    let gaps: Vec<_> = day.meter_gaps.iter().map(|g| (g.customer_id, g.missing_intervals(), g.estimated_intervals)).collect();
    assert_eq!(gaps, vec![(11, 2, 2), (12, 24, 24)], "still gaps of readings, each estimated");
    let seven_am = day.region_hours.iter().find(|hour| hour.hour == 7).unwrap();
    assert_eq!((seven_am.total, seven_am.readings, seven_am.customers), (12.0 + 4.0 * 1.5, 12, 2), "estimates count, not as readings");
    let restated = |customer_id| {
        let store = Arc::clone(&store);
        async move {
            let windows = store.customer_windows(customer_id).await.unwrap();
            windows.into_iter().find(|w| w.slot.width_ms == 86_400_000 && w.slot.start_ms == DAY_START_MS).map(|w| w.aggregate.sum)
        }
    };
    assert_eq!(restated(12).await, Some(180.0), "the serving store has the estimated day");
    let (_, reconciliation) = results.day(date()).await.unwrap();
    assert_eq!(reconciliation.iter().map(|row| row.batch_estimated).collect::<Vec<_>>(), vec![2.0 + 3.0 + 24.0 * 1.5], "the estimates in the batch's total");

    // The readings arrive late: they replace the estimates, and the day is restated.
    write(&master, e, date(), 0, 1_000, &[reading(11, e, "US-CA", ten, 5.0), reading(11, e, "US-CA", ten + FIVE_MINUTES, 5.0)]).await;
    write(&master, e, date(), 1, 1_000, &quarter_hours(DAY_START_MS, 3.0, |quarter| (24..48).contains(&quarter))).await;
    let summary = run_day(&job, &results, Some(&serving), date(), &[e], LATER_MS + 1).await.unwrap();
    let (day, _) = results.day(date()).await.unwrap();
    assert!(day.estimated_runs.is_empty() && day.meter_gaps.is_empty(), "{:?} {:?}", day.estimated_runs, day.meter_gaps);
    let totals: Vec<_> = day.customers.iter().map(|c| (c.customer_id, c.total, c.readings, c.estimated_intervals)).collect();
    assert_eq!(totals, vec![(11, 285.0 + 4.0 + 10.0, 288, 0), (12, 72.0 * 2.0 + 24.0 * 3.0, 96, 0)]);
    assert_eq!(summary.restatements[0].1.customers_changed, 2, "{:?}", summary.restatements);
    assert_eq!(restated(12).await, Some(216.0), "the serving store has the day as read");
    let (_, reconciliation) = results.day(date()).await.unwrap();
    assert_eq!(reconciliation.iter().map(|row| row.batch_estimated).collect::<Vec<_>>(), vec![0.0]);
}

/// A cumulative meter's register (in kWh; the master data holds Wh).
fn register(meter_id: u64, customer_id: u64, ts_ms: i64, kwh: f64) -> Reading {
    Reading { meter_id, cumulative: true, ..reading(customer_id, Utility::Electricity, "US-CA", ts_ms, kwh * 1_000.0) }
}

/// Customer 31's meter counts kWh on five dials (it wraps at 100000) and
/// customer 32's is exchanged at noon for meter 1000, whose install read
/// is 20 kWh; both read their register every quarter hour. Customer 33's
/// falls silent at noon; a week before, its register rose 0.25 kWh a quarter hour.
async fn cumulative_registers_become_consumption(master: MasterStore, database_url: &str) {
    let e = Utility::Electricity;
    let noon = DAY_START_MS + 12 * HOUR_MS;
    let cumulative = |installation: Installation| Installation { unit: MeterUnit::KWh, register: RegisterKind::Cumulative, ..installation };
    let wrapping = Installation { register_rollover: Some(100_000.0), plausible_max: Some(5.0), ..cumulative(installed(31, e, "US-CA", 900)) };
    let old = Installation { valid_to_ms: Some(noon), ..cumulative(installed(32, e, "US-CA", 900)) };
    let new = Installation { meter_id: 1_000, valid_from_ms: noon, ..cumulative(installed(32, e, "US-CA", 900)) };
    let silent = cumulative(installed(33, e, "US-CA", 900));
    let mut registry = Registry::default();
    for installation in [wrapping, old, new, silent] {
        registry.set_meter(installation.meter_id, vec![installation]);
    }
    let (wrapping_meter, old_meter) = (31 * 4, 32 * 4);
    let quarter = |q: i64| DAY_START_MS + q * QUARTER_HOUR;

    // The true consumption per quarter hour, and the registers it makes.
    let wrapping_use = |q: i64| 0.25 * (1 + q % 4) as f64;
    let (old_use, new_use) = (|q: i64| 0.5 * (1 + q % 2) as f64, |q: i64| 0.25 * (1 + q % 3) as f64);
    let mut readings = Vec::new();
    let mut wrapping_register = 99_980.0;
    for q in 0..96 {
        wrapping_register = (wrapping_register + wrapping_use(q)) % 100_000.0;
        if !(49..52).contains(&q) {
            readings.push(register(wrapping_meter, 31, quarter(q), wrapping_register));
        }
    }
    write(&master, e, date(), 0, 0, &readings).await;
    let mut readings = Vec::new();
    let (mut old_register, mut new_register) = (5_000.0, 20.0);
    for q in 0..48 {
        old_register += old_use(q);
        readings.push(register(old_meter, 32, quarter(q), old_register));
    }
    readings.push(register(1_000, 32, noon, new_register));
    for q in 49..96 {
        new_register += new_use(q);
        readings.push(register(1_000, 32, quarter(q), new_register));
    }
    write(&master, e, date(), 1, 0, &readings).await;
    let before = date().pred_opt().unwrap();
    let late_evening = DAY_START_MS - QUARTER_HOUR;
    write(&master, e, before, 0, 0, &[register(wrapping_meter, 31, late_evening - QUARTER_HOUR, 99_979.0), register(wrapping_meter, 31, late_evening, 99_980.0)]).await;
    write(&master, e, before, 1, 0, &[register(old_meter, 32, late_evening, 5_000.0)]).await;
    let silent_meter = 33 * 4;
    let silent_use = |q: i64| 0.25 * (1 + q % 2) as f64;
    let mut silent_register = 1_000.0;
    let mut readings = Vec::new();
    for q in 0..48 {
        silent_register += silent_use(q);
        readings.push(register(silent_meter, 33, quarter(q), silent_register));
    }
    write(&master, e, date(), 2, 0, &readings).await;
    write(&master, e, before, 2, 0, &[register(silent_meter, 33, late_evening, 1_000.0)]).await;
    let week_before = date().checked_sub_days(chrono::Days::new(7)).unwrap();
    let week_readings: Vec<Reading> =
        (0..96).map(|q| register(silent_meter, 33, quarter(q) - 7 * 86_400_000, 700.0 + 0.25 * q as f64)).collect();
    write(&master, e, week_before, 2, 0, &week_readings).await;

    let job = BatchJob::new(master.clone(), 256 * 1024 * 1024);
    let database = auth_results::Database::connect(database_url).await.unwrap();
    database.import_registry(&registry, true, DAY_START_MS).await.unwrap();
    let results = ResultsDb::of(database);
    run_day(&job, &results, None, date(), &[e], LATER_MS).await.unwrap();
    let (day, _) = results.day(date()).await.unwrap();

    let wrapping_total: f64 = (0..96).map(wrapping_use).sum::<f64>() * 1_000.0;
    let exchanged_total: f64 = ((0..48).map(old_use).sum::<f64>() + (49..96).map(new_use).sum::<f64>()) * 1_000.0;
    let totals: Vec<_> = day
        .customers
        .iter()
        .map(|c| (c.customer_id, c.total, c.readings, c.expected_intervals, c.received_intervals, c.suspect_intervals, c.estimated_intervals))
        .collect();
    let silent_total = (0..48).map(silent_use).sum::<f64>() * 1_000.0 + 48.0 * 250.0;
    assert_eq!(
        totals,
        vec![(31, wrapping_total, 93, 96, 93, 1, 3), (32, exchanged_total, 96, 96, 96, 1, 0), (33, silent_total, 48, 96, 48, 0, 48)],
        "in {database_url}"
    );
    let flagged: Vec<_> = day.suspect_intervals.iter().map(|s| (s.meter_id, s.ts_ms, s.value, s.rule)).collect();
    assert_eq!(flagged, vec![(wrapping_meter, quarter(31), 1_000.0, SuspectRule::Rollover), (1_000, noon, 20_000.0, SuspectRule::RegisterStart)]);
    let run = |meter_id, customer_id, (from, to), total, method| EstimatedRun {
        utility: e,
        meter_id,
        customer_id,
        region: region("US-CA"),
        from_ms: quarter(from),
        to_ms: quarter(to),
        intervals: (to - from) as u64,
        total,
        method,
    };
    assert_eq!(day.estimated_runs, vec![
        run(wrapping_meter, 31, (49, 52), 3.0 * 2.5 * 1_000.0 / 4.0, EstimationMethod::Register),
        run(silent_meter, 33, (48, 96), 48.0 * 250.0, EstimationMethod::Profile),
    ], "the gap's share of the register's advance over it; the silent afternoon from the advances a week before");
}

/// A Californian customer (41) whose meter reads 1 Wh plus 1/64 Wh times
/// its quarter hour of the year modulo 97 (binary fractions, so sums are
/// exact in any order; neighbouring readings differ), every quarter
/// hour around the US spring-forward (2026-03-08) and fall-back
/// (2026-11-01) changes, and a Texan (42) reading 2 Wh each quarter hour
/// around them too. Each reading is in its UTC date's folder, as the
/// archiver writes it.
async fn local_days_of_the_dst_changes(master: MasterStore, database_url: &str) {
    let e = Utility::Electricity;
    let mut registry = Registry::default();
    for installation in [installed(41, e, "US-CA", 900), installed(42, e, "US-TX", 900)] {
        registry.set_meter(installation.meter_id, vec![installation]);
    }
    let database = auth_results::Database::connect(database_url).await.unwrap();
    database.import_registry(&registry, true, 0).await.unwrap();
    let results = ResultsDb::of(database);
    let job = BatchJob::new(master.clone(), 256 * 1024 * 1024);
    let year_start = auth_master::day_start_ms(parse_date("2026-01-01").unwrap());
    let californian = |ts_ms: i64| 1.0 + ((ts_ms - year_start) / QUARTER_HOUR % 97) as f64 / 64.0;
    for (day, hours) in [("2026-03-08", 23), ("2026-11-01", 25)] {
        let date = parse_date(day).unwrap();
        let california = auth_core::local_day::day_range(region("US-CA"), date);
        assert_eq!((california.end - california.start) / HOUR_MS, hours);
        // UTC noon the day before to UTC noon the day after: the local day and some of its neighbours.
        let from = auth_master::day_start_ms(date) - 12 * HOUR_MS;
        let mut offset = 0;
        for folder in [date.pred_opt().unwrap(), date, date.succ_opt().unwrap()] {
            let folder_start = auth_master::day_start_ms(folder);
            let times: Vec<i64> = (0..96).map(|quarter| folder_start + quarter * QUARTER_HOUR).filter(|&ts_ms| ts_ms >= from && ts_ms < from + 48 * HOUR_MS).collect();
            // A file is in the master data's order: by customer, then event time.
            let readings: Vec<Reading> = times
                .iter()
                .map(|&ts_ms| reading(41, e, "US-CA", ts_ms, californian(ts_ms)))
                .chain(times.iter().map(|&ts_ms| reading(42, e, "US-TX", ts_ms, 2.0)))
                .collect();
            write(&master, e, folder, 0, offset, &readings).await;
            offset += readings.len() as u64;
        }
        run_day(&job, &results, None, date, &[e], LATER_MS + 365 * 86_400_000).await.unwrap();
        let (outputs, _) = results.day(date).await.unwrap();

        let quarters = (hours * 4) as u64;
        let expected_total: f64 = (0..quarters as i64).map(|quarter| californian(california.start + quarter * QUARTER_HOUR)).sum();
        let days: Vec<_> = outputs.customers.iter().map(|c| (c.customer_id, c.readings, c.expected_intervals, c.received_intervals)).collect();
        assert_eq!(days, vec![(41, quarters, quarters, quarters), (42, quarters, quarters, quarters)], "{day} has {hours} local hours, in {database_url}");
        assert_eq!(outputs.customers[0].total, expected_total, "{day}: the readings of the local day exactly");
        assert_eq!(outputs.customers[1].total, 2.0 * quarters as f64);
        let utc_midnight = auth_master::day_start_ms(date.succ_opt().unwrap());
        let first_utc_date: Vec<i64> = (0..quarters as i64).map(|quarter| california.start + quarter * QUARTER_HOUR).filter(|&ts_ms| ts_ms < utc_midnight).collect();
        let first_utc_date_total: f64 = first_utc_date.iter().map(|&ts_ms| californian(ts_ms)).sum();
        assert_eq!(
            (outputs.customers[0].first_utc_date_total, outputs.customers[0].first_utc_date_readings),
            (first_utc_date_total, first_utc_date.len() as u64),
            "{day}: the part before UTC midnight"
        );
        let texas = auth_core::local_day::day_range(region("US-TX"), date);
        assert_eq!(outputs.customers[1].first_utc_date_readings, ((utc_midnight - texas.start) / QUARTER_HOUR) as u64, "{day}: Texas's day before UTC midnight");
        let california_hours: Vec<u8> =
            outputs.region_hours.iter().filter(|hour| hour.region == region("US-CA")).map(|hour| hour.hour).collect();
        assert_eq!(california_hours, (0..hours as u8).collect::<Vec<_>>(), "{day}: hours from local midnight");
        let last = outputs.region_hours.iter().rfind(|hour| hour.region == region("US-CA")).unwrap();
        let last_hour_start = california.start + i64::from(last.hour) * HOUR_MS;
        let last_hour: f64 = (0..4).map(|quarter| californian(last_hour_start + quarter * QUARTER_HOUR)).sum();
        assert_eq!(last.total, last_hour, "{day}: the last local hour is 23:00 to midnight");
    }
}

fn sqlite_url(directory: &tempfile::TempDir) -> String {
    format!("sqlite://{}/results/auth.db", directory.path().display())
}

fn local_master(directory: &tempfile::TempDir) -> MasterStore {
    MasterStore::open(directory.path().join("master").to_str().unwrap()).unwrap()
}

/// The tests of a suite `async fn(MasterStore, database_url)` on SQLite,
/// PostgreSQL and MariaDB (a fresh database named after `$database`), each
/// with its master data in a temporary directory.
macro_rules! on_every_database {
    ($suite:ident, $database:literal) => {
        mod $suite {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let directory = tempfile::tempdir().unwrap();
                super::$suite(local_master(&directory), &sqlite_url(&directory)).await;
            }

            #[tokio::test]
            #[ignore = "needs PostgreSQL: scripts/test.sh"]
            async fn postgres() {
                let directory = tempfile::tempdir().unwrap();
                let url = auth_testkit::fresh_database(&auth_testkit::postgres_url(), $database).await;
                super::$suite(local_master(&directory), &url).await;
            }

            #[tokio::test]
            #[ignore = "needs MariaDB: scripts/test.sh"]
            async fn mariadb() {
                let directory = tempfile::tempdir().unwrap();
                let url = auth_testkit::fresh_database(&auth_testkit::mysql_url(), $database).await;
                super::$suite(local_master(&directory), &url).await;
            }
        }
    };
}

on_every_database!(exact_rows_and_idempotent_reruns, "batch");
on_every_database!(estimates_fill_gaps_and_late_readings_replace_them, "estimates");
on_every_database!(cumulative_registers_become_consumption, "registers");
on_every_database!(local_days_of_the_dst_changes, "dst");

#[tokio::test]
#[ignore = "needs the S3 server: scripts/test.sh"]
async fn s3_master_data_exact_rows() {
    let directory = tempfile::tempdir().unwrap();
    let master = MasterStore::open(&auth_testkit::s3_url(&auth_testkit::unique_name("batch"))).unwrap();
    exact_rows_and_idempotent_reruns(master, &sqlite_url(&directory)).await;
}

#[tokio::test]
async fn missing_input_and_corrupt_files_are_named() {
    let directory = tempfile::tempdir().unwrap();
    let master = local_master(&directory);
    let job = BatchJob::new(master.clone(), 256 * 1024 * 1024);
    let results = ResultsDb::connect(&sqlite_url(&directory)).await.unwrap();
    match run_day(&job, &results, None, date(), &UTILITIES, LATER_MS).await {
        Err(DayError::Batch(err @ BatchError::NoInput { .. })) => {
            assert!(err.to_string().contains("no master data for the local day 2026-11-27"), "{err}");
        }
        other => panic!("expected NoInput, got {other:?}"),
    }
    known_readings(&master).await;
    let corrupt = directory.path().join("master/readings/utility=electricity/date=2026-11-27/part-7-0.parquet");
    std::fs::write(&corrupt, b"PAR1 this is not a parquet file PAR1").unwrap();
    match run_day(&job, &results, None, date(), &UTILITIES, LATER_MS).await {
        Err(DayError::Batch(err @ BatchError::Unreadable { .. })) => {
            assert!(err.to_string().contains("part-7-0.parquet"), "the message names the file: {err}");
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
    // A file whose footer is sound but whose pages are garbage.
    std::fs::remove_file(&corrupt).unwrap();
    let damaged = directory.path().join("master/readings/utility=electricity/date=2026-11-27/part-1-0.parquet");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[4..middle] {
        *byte = 0xA5;
    }
    std::fs::write(&damaged, bytes).unwrap();
    match run_day(&job, &results, None, date(), &UTILITIES, LATER_MS).await {
        Err(DayError::Batch(err @ BatchError::Unreadable { .. })) => {
            assert!(err.to_string().contains("part-1-0.parquet"), "the message names the file: {err}");
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
    assert!(results.day(date()).await.unwrap().0.customers.is_empty(), "nothing written for a failed day");
}

/// The stream missed customer 1's 20 Wh (too late) and never saw the water reading.
async fn stream_windows(store: &dyn ServingStore) {
    // Each customer's day window is its local day, as the stream aligns it.
    let slot = |code: &str| WindowSlot { width_ms: 86_400_000, start_ms: auth_core::local_day::day_start_ms(region(code), date()) };
    let aggregate = |sum, count, min, max| Aggregate { sum, count, min, max };
    let e = Utility::Electricity;
    let topic = utility_topic("lambda", e);
    let windows = [
        (1u64, "US-CA", aggregate(15.0, 2, 5.0, 10.0)),
        (2, "US-CA", aggregate(15.0, 2, 7.0, 8.0)),
        (3, "US-TX", aggregate(1.5, 1, 1.5, 1.5)),
    ];
    let mut flushes: std::collections::BTreeMap<TopicPartition, Vec<WindowUpdate>> = Default::default();
    let mut regions: std::collections::BTreeMap<(TopicPartition, Region), Aggregate> = Default::default();
    for (customer_id, code, aggregate) in windows {
        let partition = TopicPartition::new(&topic, partition_for(customer_id, PARTITIONS));
        let update = WindowUpdate { owner: WindowOwner::Customer(customer_id), utility: e, slot: slot(code), aggregate, closed: true };
        flushes.entry(partition.clone()).or_default().push(update);
        regions.entry((partition, region(code))).and_modify(|total| total.merge(&aggregate)).or_insert(aggregate);
    }
    for ((partition, region), aggregate) in regions {
        let update = WindowUpdate { owner: WindowOwner::Region(region), utility: e, slot: slot(region.code()), aggregate, closed: true };
        flushes.entry(partition).or_default().push(update);
    }
    for (partition, windows) in flushes {
        store.apply(PartitionFlush { partition, epoch: None, windows, meters: Vec::new(), checkpoint: None }).await.unwrap();
    }
}

/// The known readings in master data in `directory`, the stream's windows of
/// them in a memory store, and a batch job and results database over them.
async fn known_day_streamed(directory: &tempfile::TempDir) -> (Arc<dyn ServingStore>, BatchJob, ResultsDb) {
    let master = local_master(directory);
    known_readings(&master).await;
    let store: Arc<dyn ServingStore> = Arc::new(MemoryStore::new(60));
    stream_windows(store.as_ref()).await;
    let job = BatchJob::new(master, 256 * 1024 * 1024);
    let results = ResultsDb::connect(&sqlite_url(directory)).await.unwrap();
    (store, job, results)
}

#[tokio::test]
async fn reconciliation_and_restatement() {
    let directory = tempfile::tempdir().unwrap();
    let (store, job, results) = known_day_streamed(&directory).await;
    let serving = Serving { store: store.as_ref(), settle_ms: 70_000, archived: Archived::Before(LATER_MS) };

    // Before the day has settled: reconciled, not restated.
    let early = DAY_START_MS + 86_400_000 + 10_000;
    let summary = run_day(&job, &results, Some(&serving), date(), &UTILITIES, early).await.unwrap();
    assert!(summary.restatements.is_empty());
    let (_, reconciliation) = results.day(date()).await.unwrap();
    assert_eq!(reconciliation, vec![
        Reconciliation { utility: Utility::Electricity, batch_total: 51.5, batch_readings: 6, batch_estimated: 0.0, stream_total: Some(31.5), stream_readings: Some(5) },
        Reconciliation { utility: Utility::Water, batch_total: 100.0, batch_readings: 1, batch_estimated: 0.0, stream_total: None, stream_readings: None },
    ]);
    assert_eq!(reconciliation[0].drift(), Some(20.0));

    let summary = run_day(&job, &results, Some(&serving), date(), &UTILITIES, LATER_MS).await.unwrap();
    let restated = vec![
        (Utility::Electricity, Restatement { customers_restated: 3, customers_changed: 1, total_change: 20.0, largest_change: 20.0 }),
        (Utility::Water, Restatement { customers_restated: 1, customers_changed: 1, total_change: 100.0, largest_change: 100.0 }),
    ];
    assert_eq!(summary.restatements, restated);
    assert_eq!(results.restatements(date()).await.unwrap(), restated);
    let day = |windows: Vec<auth_core::ports::StoredWindow>, utility| {
        windows.into_iter().find(|w| w.utility == utility && w.slot.width_ms == 86_400_000 && w.slot.start_ms == DAY_START_MS).map(|w| w.aggregate)
    };
    let one = store.customer_windows(1).await.unwrap();
    assert_eq!(day(one.clone(), Utility::Electricity), Some(Aggregate { sum: 35.0, count: 3, min: 5.0, max: 20.0 }));
    assert_eq!(day(one, Utility::Water).map(|a| a.sum), Some(100.0));
    let regions = store.region_windows(86_400_000, DAY_START_MS).await.unwrap();
    let california = regions.iter().find(|w| w.region == region("US-CA") && w.window.utility == Utility::Electricity).unwrap();
    assert_eq!(california.window.aggregate.sum, 50.0, "the region's day is the batch's too");

    // Restating again changes nothing and says so.
    let again = run_day(&job, &results, Some(&serving), date(), &UTILITIES, LATER_MS).await.unwrap();
    assert!(again.restatements.iter().all(|(_, restatement)| restatement.customers_changed == 0), "{:?}", again.restatements);
    let (_, reconciliation) = results.day(date()).await.unwrap();
    assert!(reconciliation.iter().all(|row| row.drift() == Some(0.0)), "{reconciliation:?}");

    // A processor replaying the day from an older checkpoint cannot undo the restatement.
    stream_windows(store.as_ref()).await;
    let one = store.customer_windows(1).await.unwrap();
    assert_eq!(day(one, Utility::Electricity).map(|a| a.sum), Some(35.0), "the stream's replay is left out");
    let regions = store.region_windows(86_400_000, DAY_START_MS).await.unwrap();
    let california = regions.iter().find(|w| w.region == region("US-CA") && w.window.utility == Utility::Electricity).unwrap();
    assert_eq!(california.window.aggregate.sum, 50.0);

    // An older run finishing late is refused, naming the newer one.
    match run_day(&job, &results, Some(&serving), date(), &UTILITIES, LATER_MS - 1).await {
        Err(err @ DayError::Store(PortError::Superseded { .. })) => {
            assert!(err.to_string().contains(&format!("version {LATER_MS} restated it already")), "{err}");
        }
        other => panic!("expected Superseded, got {other:?}"),
    }
}

#[tokio::test]
async fn restatement_waits_for_the_archiver() {
    let directory = tempfile::tempdir().unwrap();
    let (store, job, results) = known_day_streamed(&directory).await;
    let behind = Archived::Behind { partition: TopicPartition::new("lambda.electricity", 3), archived_before: 10, log_end: 12 };
    let serving = Serving { store: store.as_ref(), settle_ms: 70_000, archived: behind };
    let summary = run_day(&job, &results, Some(&serving), date(), &UTILITIES, LATER_MS).await.unwrap();
    assert!(summary.restatements.is_empty(), "{:?}", summary.restatements);
    assert!(
        summary.line().contains("not restated yet: the archiver is behind on lambda.electricity/3: archived before offset 10, the log ends at 12"),
        "{}",
        summary.line()
    );
    // The log archived only up to a minute after the day's end: not enough for a 70 s settle time.
    let early = Archived::Before(DAY_START_MS + 86_400_000 + 60_000);
    let serving = Serving { store: store.as_ref(), settle_ms: 70_000, archived: early };
    let summary = run_day(&job, &results, Some(&serving), date(), &UTILITIES, LATER_MS).await.unwrap();
    assert!(summary.restatements.is_empty() && summary.restatement_waits.is_some(), "{}", summary.line());
    let one = store.customer_windows(1).await.unwrap();
    let streamed = one.iter().find(|w| w.utility == Utility::Electricity && w.slot.width_ms == 86_400_000).map(|w| w.aggregate.sum);
    assert_eq!(streamed, Some(15.0), "the stream's total stays until the day is restated");
}

/// The archiver's published progress against the log's end, on the embedded
/// log: behind until the archiver wrote its segments, and behind again on a
/// partition the topic gained since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archivers_progress_covers_every_partition_of_the_log() {
    let directory = tempfile::tempdir().unwrap();
    let master = local_master(&directory);
    let backend = auth_testkit::Backend::embedded("settle");
    let log = backend.log.as_ref();
    let topic = utility_topic("settle", Utility::Electricity);
    log.ensure_topic(&topic, 2).await.unwrap();
    let producer = log.producer().unwrap();
    let record = |customer_id: u64, partitions: u32| {
        let reading = reading(customer_id, Utility::Electricity, "US-CA", DAY_START_MS + customer_id as i64, 1.0);
        OutRecord {
            partition: partition_for(customer_id, partitions),
            key: Bytes::from(customer_id.to_string()),
            value: Bytes::copy_from_slice(&codec::encode(&reading)),
        }
    };
    producer.send(&topic, (1..=40).map(|id| record(id, 2)).collect()).await.unwrap();
    let topics = vec![topic.clone()];
    let before = archived(log, &master, &topics, Duration::ZERO).await.unwrap();
    assert!(matches!(before, Archived::Behind { archived_before: 0, .. }), "{before:?}");
    let mut watch = ArchiveWatch::new(topics.clone());
    let first_look_ms = auth_core::now_ms();
    let looked = watch.look(log, &master).await.unwrap();
    assert!(matches!(looked, Archived::Behind { archived_before: 0, .. }), "{looked:?}");

    let mut spec = PipelineSpec { utilities: vec![Utility::Electricity], ..PipelineSpec::default() };
    spec.archive = ArchiveSpec { url: master.location().to_owned(), roll_bytes: 1 << 20, roll_secs: 3_600 };
    let mut archiver = Archiver::join(master.clone(), log, "settle", &spec).unwrap();
    let mut quiet = 0;
    while quiet < 5 {
        if archiver.step().await.unwrap() { quiet = 0 } else { quiet += 1 }
    }
    archiver.finish().await.unwrap();
    let started_ms = auth_core::now_ms();
    match archived(log, &master, &topics, Duration::ZERO).await.unwrap() {
        Archived::Before(ms) => assert!(ms >= started_ms, "{ms} < {started_ms}"),
        other => panic!("expected the log archived, got {other:?}"),
    }
    // The watch, which never waits: the ends it read before the archiver ran
    // are passed now, and so are the ones it reads now.
    let second_look_ms = auth_core::now_ms();
    match watch.look(log, &master).await.unwrap() {
        Archived::Before(ms) => assert!(ms >= second_look_ms, "{ms} < {second_look_ms} (first look {first_look_ms})"),
        other => panic!("expected the log archived, got {other:?}"),
    }

    log.ensure_topic(&topic, 4).await.unwrap();
    let grown = (1..=40).find(|&id| partition_for(id, 4) == 3).unwrap();
    producer.send(&topic, vec![record(grown, 4)]).await.unwrap();
    let after = archived(log, &master, &topics, Duration::ZERO).await.unwrap();
    assert_eq!(after, Archived::Behind { partition: TopicPartition::new(&topic, 3), archived_before: 0, log_end: 1 });
    // The watch still knows how far the archiver got before the new record.
    let third_look_ms = auth_core::now_ms();
    match watch.look(log, &master).await.unwrap() {
        Archived::Before(ms) => assert!((second_look_ms..=third_look_ms).contains(&ms), "{ms}"),
        other => panic!("expected the earlier ends still passed, got {other:?}"),
    }
}
