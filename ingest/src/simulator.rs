//! The simulator: a fleet's readings in event-time order, with the knobs for
//! disorder, lateness, duplicates and malformed input, and a paced driver.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

use auth_core::spec::{SimulatorMode, SimulatorSpec};
use auth_core::{CustomerKind, Reading, Utility, codec, splitmix64};
use bytes::Bytes;

use crate::fleet::Fleet;
use crate::profile::{LocalTime, WATER_BURST_LITRES_PER_HOUR, expected_rate};

/// One thing a simulated meter sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Simulated {
    /// A reading; when the malformed knob hits, its value is negative or not finite.
    Reading(Reading),
    /// Bytes that are not a reading at all (a truncated record), sent for a customer's meter.
    Garbage { utility: Utility, customer_id: u64, bytes: Bytes },
}

impl Simulated {
    pub fn utility(&self) -> Utility {
        match self {
            Simulated::Reading(reading) => reading.utility,
            Simulated::Garbage { utility, .. } => *utility,
        }
    }

    pub fn customer_id(&self) -> u64 {
        match self {
            Simulated::Reading(reading) => reading.customer_id,
            Simulated::Garbage { customer_id, .. } => *customer_id,
        }
    }
}

/// Values are multiples of 1/256 of their unit, so that sums are exact in
/// any order (well within f64's 53 bits), as integer meter registers are.
const VALUE_QUANTUM: f64 = 256.0;

/// Zones of the region table: UTC-10 to UTC-5.
const ZONES: std::ops::RangeInclusive<i8> = -10..=-5;
const ZONE_COUNT: usize = 6;

struct Delayed {
    arrival_ms: i64,
    sequence: u64,
    item: Simulated,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.arrival_ms, self.sequence).cmp(&(other.arrival_ms, other.sequence))
    }
}

/// Produces the readings of a fleet, heartbeat after heartbeat. Within a
/// heartbeat each meter reports once at its own phase; readings that a knob
/// delays come out in a later heartbeat, in arrival order.
pub struct Simulator {
    spec: SimulatorSpec,
    fleet: Fleet,
    heartbeat_ms: i64,
    start_ms: i64,
    tick: i64,
    cursor: usize,
    rates: [[[f64; ZONE_COUNT]; 3]; 2],
    delayed: BinaryHeap<Reverse<Delayed>>,
    sequence: u64,
}

/// A uniform number in [0, 1) from 53 bits of `bits`.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

impl Simulator {
    /// A simulator whose first heartbeat starts at `start_ms`.
    pub fn new(spec: &SimulatorSpec, start_ms: i64) -> Self {
        let mut simulator = Self {
            spec: spec.clone(),
            fleet: Fleet::generate(spec),
            heartbeat_ms: i64::from(spec.heartbeat_secs.max(1)) * 1_000,
            start_ms,
            tick: 0,
            cursor: 0,
            rates: [[[0.0; ZONE_COUNT]; 3]; 2],
            delayed: BinaryHeap::new(),
            sequence: 0,
        };
        simulator.compute_rates();
        simulator
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Keeps only the meters for which `keep` holds (one log partition's
    /// customers, say); the others' readings are not produced. Call it before
    /// the first [`Simulator::fill`].
    pub fn retain_meters(&mut self, keep: impl FnMut(&crate::Meter) -> bool) {
        self.fleet.retain(keep);
        self.cursor = 0;
    }

    /// Start of the heartbeat being produced (the next one once a heartbeat is complete).
    pub fn event_time_ms(&self) -> i64 {
        self.start_ms + self.tick * self.heartbeat_ms
    }

    /// Meters still to report in the current heartbeat.
    pub fn remaining_in_heartbeat(&self) -> usize {
        self.fleet.meters().len() - self.cursor
    }

    fn compute_rates(&mut self) {
        let middle_ms = self.event_time_ms() + self.heartbeat_ms / 2;
        for (kind_index, kind) in [CustomerKind::Residential, CustomerKind::Business].into_iter().enumerate() {
            for utility in Utility::ALL {
                for (zone_index, zone) in ZONES.enumerate() {
                    let time = LocalTime::at(middle_ms, zone);
                    self.rates[kind_index][utility.index()][zone_index] = expected_rate(kind, utility, &time);
                }
            }
        }
    }

    fn delay(&mut self, arrival_ms: i64, item: Simulated) {
        self.sequence += 1;
        self.delayed.push(Reverse(Delayed { arrival_ms, sequence: self.sequence, item }));
    }

    /// Appends up to `max` items to `out`; there is always more.
    pub fn fill(&mut self, out: &mut Vec<Simulated>, max: usize) {
        let target = out.len() + max;
        let meter_count = self.fleet.meters().len();
        if meter_count == 0 {
            return;
        }
        while out.len() < target {
            if self.cursor == 0 {
                let tick_start = self.event_time_ms();
                while out.len() < target {
                    match self.delayed.peek() {
                        Some(Reverse(next)) if next.arrival_ms <= tick_start => {}
                        _ => break,
                    }
                    if let Some(Reverse(due)) = self.delayed.pop() {
                        out.push(due.item);
                    }
                }
                if out.len() >= target {
                    return;
                }
            }
            let end = meter_count.min(self.cursor + (target - out.len()));
            for index in self.cursor..end {
                self.produce(index, out);
            }
            self.cursor = end;
            if self.cursor == meter_count {
                self.cursor = 0;
                self.tick += 1;
                self.compute_rates();
            }
        }
    }

    fn produce(&mut self, index: usize, out: &mut Vec<Simulated>) {
        let meter = self.fleet.meters()[index];
        let ts_ms = self.event_time_ms() + meter.phase_ms;
        let bits = splitmix64(self.spec.seed ^ splitmix64(meter.meter_id ^ splitmix64(self.tick as u64)));
        let kind_index = usize::from(meter.customer_kind == CustomerKind::Business);
        let zone_index = (meter.region.info().utc_offset_hours - ZONES.start()) as usize;
        let rate_per_hour = self.rates[kind_index][meter.utility.index()][zone_index.min(ZONE_COUNT - 1)];
        let hours = self.heartbeat_ms as f64 / 3_600_000.0;
        let noise = unit(bits);
        let raw = if meter.utility == Utility::Water {
            let burst_chance = (rate_per_hour * meter.scale / WATER_BURST_LITRES_PER_HOUR).min(1.0);
            if noise < burst_chance { WATER_BURST_LITRES_PER_HOUR * hours } else { 0.0 }
        } else {
            rate_per_hour * hours * meter.scale * (0.75 + 0.5 * noise)
        };
        let value = (raw * VALUE_QUANTUM).round() / VALUE_QUANTUM;
        let mut reading = Reading {
            meter_id: meter.meter_id,
            customer_id: meter.customer_id,
            utility: meter.utility,
            region: meter.region,
            customer_kind: meter.customer_kind,
            ts_ms,
            value,
            cumulative: false,
        };
        let knobs = splitmix64(bits);
        let (malformed_share, duplicate_share, late_share, late_secs, out_of_order_share, disorder_secs) = (
            self.spec.malformed_share,
            self.spec.duplicate_share,
            self.spec.late_share,
            self.spec.late_secs,
            self.spec.out_of_order_share,
            self.spec.disorder_secs,
        );
        let knob = |slot: u32| unit(knobs.rotate_left(slot * 13));
        if knob(0) < malformed_share {
            let item = match knobs % 3 {
                0 => {
                    reading.value = -reading.value - 1.0;
                    Simulated::Reading(reading)
                }
                1 => {
                    reading.value = f64::NAN;
                    Simulated::Reading(reading)
                }
                _ => {
                    let encoded = codec::encode(&reading);
                    let cut = 1 + (knobs >> 8) as usize % (encoded.len() - 1);
                    Simulated::Garbage {
                        utility: reading.utility,
                        customer_id: reading.customer_id,
                        bytes: Bytes::copy_from_slice(&encoded[..cut]),
                    }
                }
            };
            out.push(item);
            return;
        }
        let item = Simulated::Reading(reading);
        if knob(1) < duplicate_share {
            self.delay(ts_ms + 1_000 + (knobs >> 40) as i64 % 2_000, item.clone());
        }
        if knob(2) < late_share {
            self.delay(ts_ms + i64::from(late_secs) * 1_000, item);
        } else if knob(3) < out_of_order_share {
            let disorder_ms = (knob(4) * f64::from(disorder_secs) * 1_000.0) as i64;
            self.delay(ts_ms + disorder_ms, item);
        } else {
            out.push(item);
        }
    }
}

/// Anything the paced driver can hand readings to.
#[allow(async_fn_in_trait)]
pub trait ReadingSink {
    type Error;
    async fn write(&mut self, batch: &[Simulated]) -> Result<(), Self::Error>;
}

/// Runs `simulator` into `sink` at the pace of `spec.mode` until `until_ms`
/// of event time (forever when `None`) or until `stop` resolves.
/// Returns how many items were written.
pub async fn run_paced<S: ReadingSink>(
    simulator: &mut Simulator,
    sink: &mut S,
    spec: &SimulatorSpec,
    until_ms: Option<i64>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<u64, S::Error> {
    tokio::pin!(stop);
    let wall_start = tokio::time::Instant::now();
    let event_start = simulator.event_time_ms();
    let speed = match spec.mode {
        SimulatorMode::RealTime => Some(1.0),
        SimulatorMode::Accelerated => Some(spec.time_factor),
        SimulatorMode::AsFastAsPossible => None,
    };
    let batch_size = (simulator.fleet().meters().len() / 4).clamp(256, 16_384);
    let mut batch = Vec::with_capacity(batch_size);
    let mut written = 0u64;
    loop {
        if until_ms.is_some_and(|until| simulator.event_time_ms() >= until) {
            return Ok(written);
        }
        if let Some(speed) = speed {
            // A heartbeat's readings are sent once its last reading's event time has come.
            let heartbeat_end = simulator.event_time_ms() + simulator.heartbeat_ms;
            let ahead_ms = (heartbeat_end - event_start) as f64 / speed;
            let due = wall_start + Duration::from_secs_f64(ahead_ms.max(0.0) / 1_000.0);
            tokio::select! {
                () = &mut stop => return Ok(written),
                () = tokio::time::sleep_until(due) => {}
            }
        }
        batch.clear();
        simulator.fill(&mut batch, batch_size.min(simulator.remaining_in_heartbeat()));
        tokio::select! {
            () = &mut stop => return Ok(written),
            result = sink.write(&batch) => result?,
        }
        written += batch.len() as u64;
        metrics::counter!(crate::METRIC_SIMULATED).increment(batch.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use auth_core::spec::SimulatorSpec;

    use super::*;

    const START: i64 = 1_795_824_000_000;

    fn take(spec: &SimulatorSpec, count: usize) -> Vec<Simulated> {
        let mut simulator = Simulator::new(spec, START);
        let mut out = Vec::new();
        simulator.fill(&mut out, count);
        out
    }

    fn readings(items: &[Simulated]) -> Vec<Reading> {
        items.iter().filter_map(|item| match item { Simulated::Reading(r) => Some(*r), Simulated::Garbage { .. } => None }).collect()
    }

    #[test]
    fn same_seed_same_readings_in_any_chunking() {
        let spec = SimulatorSpec { customers: 200, out_of_order_share: 0.1, duplicate_share: 0.05, malformed_share: 0.02, ..SimulatorSpec::default() };
        let whole = take(&spec, 20_000);
        let mut simulator = Simulator::new(&spec, START);
        let mut chunked = Vec::new();
        while chunked.len() < 20_000 {
            let room = 333.min(20_000 - chunked.len());
            simulator.fill(&mut chunked, room);
        }
        assert_eq!(format!("{whole:?}"), format!("{chunked:?}"));
        let other_seed = take(&SimulatorSpec { seed: 2, ..spec }, 20_000);
        assert_ne!(format!("{whole:?}"), format!("{other_seed:?}"));
    }

    #[test]
    fn heartbeat_and_phase() {
        let spec = SimulatorSpec { customers: 50, ..SimulatorSpec::default() };
        let meters = Simulator::new(&spec, START).fleet().meters().len();
        let items = readings(&take(&spec, meters * 3));
        let first = items[0].meter_id;
        let times: Vec<i64> = items.iter().filter(|r| r.meter_id == first).map(|r| r.ts_ms).collect();
        assert_eq!(times.len(), 3);
        assert_eq!(times[1] - times[0], 5_000);
        assert_eq!(times[2] - times[1], 5_000);
        assert!(items.iter().all(|r| r.value >= 0.0 && (r.value * VALUE_QUANTUM).fract() == 0.0));
    }

    #[test]
    fn knobs_produce_what_they_say() {
        let spec = SimulatorSpec {
            customers: 300,
            late_share: 0.01,
            late_secs: 120,
            duplicate_share: 0.02,
            malformed_share: 0.03,
            ..SimulatorSpec::default()
        };
        let items = take(&spec, 100_000);
        let malformed = items
            .iter()
            .filter(|item| match item {
                Simulated::Reading(r) => !r.problems(None).is_empty(),
                Simulated::Garbage { bytes, .. } => codec::decode(bytes).is_err(),
            })
            .count();
        assert!((2_400..3_600).contains(&malformed), "{malformed} malformed");
        let valid = readings(&items);
        let mut keys: Vec<(u64, i64)> = valid.iter().map(|r| (r.meter_id, r.ts_ms)).collect();
        keys.sort_unstable();
        let total = keys.len();
        keys.dedup();
        let duplicates = total - keys.len();
        assert!((1_400..2_600).contains(&duplicates), "{duplicates} duplicates");
        let mut newest = START;
        let mut late = 0;
        for reading in valid.iter().filter(|r| r.problems(None).is_empty()) {
            if reading.ts_ms < newest - 100_000 {
                late += 1;
            }
            newest = newest.max(reading.ts_ms);
        }
        assert!(late > 400, "{late} readings arrive past the allowed lateness");
    }

    struct Counting(u64);

    impl ReadingSink for Counting {
        type Error = std::convert::Infallible;

        async fn write(&mut self, batch: &[Simulated]) -> Result<(), Self::Error> {
            self.0 += batch.len() as u64;
            Ok(())
        }
    }

    /// Runs one simulated minute in `mode` on tokio's paused clock; returns
    /// the (virtual) wall time it took and the readings written.
    async fn one_minute(mode: SimulatorMode) -> (Duration, u64) {
        let spec = SimulatorSpec { customers: 20, mode, time_factor: 60.0, ..SimulatorSpec::default() };
        let mut simulator = Simulator::new(&spec, START);
        let mut sink = Counting(0);
        let started = tokio::time::Instant::now();
        let written = run_paced(&mut simulator, &mut sink, &spec, Some(START + 60_000), std::future::pending())
            .await
            .expect("infallible sink");
        assert_eq!(written, sink.0);
        (started.elapsed(), written)
    }

    #[tokio::test(start_paused = true)]
    async fn modes_pace_event_time() {
        let (real_time, readings) = one_minute(SimulatorMode::RealTime).await;
        let meters = Simulator::new(&SimulatorSpec { customers: 20, ..SimulatorSpec::default() }, START).fleet().meters().len();
        assert_eq!(readings, 12 * meters as u64, "twelve 5 s heartbeats in a minute");
        assert!((Duration::from_secs(55)..=Duration::from_secs(60)).contains(&real_time), "{real_time:?}");
        let (accelerated, _) = one_minute(SimulatorMode::Accelerated).await;
        assert!((Duration::from_millis(900)..=Duration::from_millis(1_000)).contains(&accelerated), "{accelerated:?}");
        let (fastest, _) = one_minute(SimulatorMode::AsFastAsPossible).await;
        assert_eq!(fastest, Duration::ZERO);
    }

    fn mean_rate(spec: &SimulatorSpec, kind: CustomerKind, utility: Utility, start: i64, hours: i64) -> f64 {
        let mut simulator = Simulator::new(spec, start);
        let mut out = Vec::new();
        let per_heartbeat = simulator.fleet().meters().len();
        simulator.fill(&mut out, per_heartbeat * (hours * 720) as usize);
        let picked: Vec<f64> = readings(&out)
            .iter()
            .filter(|r| r.customer_kind == kind && r.utility == utility)
            .map(|r| r.value)
            .collect();
        picked.iter().sum::<f64>() / picked.len().max(1) as f64
    }

    #[test]
    fn residential_evening_above_night_business_weekday_above_weekend() {
        let spec = SimulatorSpec { customers: 60, ..SimulatorSpec::default() };
        // Wednesday 2026-11-25 00:00 UTC. 02:00 UTC next day is 21:00 in New York and 18:00 in
        // California; 09:00 UTC is 04:00 and 01:00.
        let wednesday = 1_795_564_800_000;
        let evening = mean_rate(&spec, CustomerKind::Residential, Utility::Electricity, wednesday + 26 * 3_600_000, 1);
        let night = mean_rate(&spec, CustomerKind::Residential, Utility::Electricity, wednesday + 33 * 3_600_000, 1);
        assert!(evening > 2.0 * night, "evening {evening} vs night {night}");
        let business = SimulatorSpec { customers: 60, business_share: 1.0, ..SimulatorSpec::default() };
        let weekday_noon = wednesday + 17 * 3_600_000;
        let saturday_noon = weekday_noon + 3 * 86_400_000;
        let weekday = mean_rate(&business, CustomerKind::Business, Utility::Electricity, weekday_noon, 1);
        let weekend = mean_rate(&business, CustomerKind::Business, Utility::Electricity, saturday_noon, 1);
        assert!(weekday > 2.0 * weekend, "weekday {weekday} vs weekend {weekend}");
    }
}
