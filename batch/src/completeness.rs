//! What the registry expects of a day, and how much of it arrived.
//!
//! A meter installed for part or all of a day is expected to read once per
//! interval of its installation (`interval_secs`). The day is its region's
//! local day (23 to 25 hours). Its intervals are the
//! slots `k` whose time `k × interval + phase` lies in the part of the day
//! the installation covers, where the phase puts a slot at local midnight (a
//! daily meter's slot is its local day; 0 for intervals that divide an hour
//! in zones a whole number of hours from UTC); a reading at `ts_ms` fills
//! slot `(ts_ms - phase) div interval` (a meter reading off the grid fills
//! the slot it falls in). A day's
//! completeness for a meter is its filled slots over its expected ones. The
//! batch records it per customer day, and lists every meter with a gap,
//! including meters that sent nothing at all.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use auth_core::registry::{Registry, ValueRange};
use auth_core::{Region, Utility};
use auth_core::local_day::LocalDays;
use auth_results::InstalledPeriod;
use chrono::NaiveDate;
use rustc_hash::FxHashMap;

/// One meter of one customer, as the registry expects it on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedMeter {
    pub utility: Utility,
    pub customer_id: u64,
    pub meter_id: u64,
    pub region: Region,
    pub interval_ms: i64,
    /// Where its slots start within an interval: its local day's start modulo the interval.
    pub phase_ms: i64,
    /// The parts of the day its installations cover, `[from, to)` UTC ms.
    periods: Vec<(i64, i64)>,
    /// Slots over all the periods.
    pub expected: u64,
    /// One interval's plausible bounds in the utility's unit; a meter
    /// exchanged during the day has the widest of its installations'.
    pub plausible: ValueRange,
    /// Its expected part ends where a day computed before its end was
    /// computed: readings of its last intervals may still be on their way.
    pub ends_open: bool,
    /// Its installations during the day that report a register, ordered:
    /// its readings in them are registers ([`crate::registers`]).
    pub registers: Vec<RegisterPeriod>,
}

/// An installation of a cumulative meter, whole (not cut to the day).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterPeriod {
    pub valid_from_ms: i64,
    pub valid_to_ms: Option<i64>,
    /// Where the register wraps, in the utility's unit.
    pub rollover: Option<f64>,
}

impl RegisterPeriod {
    pub fn covers(&self, ts_ms: i64) -> bool {
        ts_ms >= self.valid_from_ms && self.valid_to_ms.is_none_or(|to| ts_ms < to)
    }
}

impl ExpectedMeter {
    /// The slot a reading at `ts_ms` fills, when the meter was expected to read in it.
    pub fn slot_of(&self, ts_ms: i64) -> Option<i64> {
        let slot = self.slot_index(ts_ms);
        let slot_ms = slot.checked_mul(self.interval_ms)?.checked_add(self.phase_ms)?;
        self.periods.iter().any(|&(from, to)| (from..to).contains(&slot_ms)).then_some(slot)
    }
}

impl ExpectedMeter {
    /// Its expected slots, in order.
    pub fn slots(&self) -> impl Iterator<Item = i64> + '_ {
        self.periods.iter().flat_map(|&(from, to)| {
            let (from, to) = (from - self.phase_ms, to - self.phase_ms);
            let first = from.div_euclid(self.interval_ms) + i64::from(from.rem_euclid(self.interval_ms) != 0);
            first..first + slots_in(from, to, self.interval_ms) as i64
        })
    }

    /// The slot that holds `ts_ms`, expected or not.
    pub fn slot_index(&self, ts_ms: i64) -> i64 {
        (ts_ms - self.phase_ms).div_euclid(self.interval_ms)
    }

    /// When `slot` starts.
    pub fn slot_start_ms(&self, slot: i64) -> i64 {
        slot * self.interval_ms + self.phase_ms
    }
}

/// Slots `k` with `k × interval` in `[from, to)`.
fn slots_in(from: i64, to: i64, interval_ms: i64) -> u64 {
    let first = from.div_euclid(interval_ms) + i64::from(from.rem_euclid(interval_ms) != 0);
    let end = to.div_euclid(interval_ms) + i64::from(to.rem_euclid(interval_ms) != 0);
    u64::try_from(end - first).unwrap_or(0)
}

/// Every meter the registry expects to read on one day.
#[derive(Debug, Default)]
pub struct Expectations {
    /// Ordered by utility, customer and meter.
    meters: Vec<ExpectedMeter>,
    /// Each customer's meters: a range of `meters`.
    customers: FxHashMap<(Utility, u64), Range<usize>>,
    /// Whether a fold has seen readings of the meter at the same position.
    seen: Vec<AtomicBool>,
}

impl Expectations {
    /// Nothing expected: the registry is empty, or not used.
    pub fn none() -> Self {
        Self::default()
    }

    /// The meters of `utilities` installed for part or all of the local
    /// day `days` (each in its region's), up to `until_ms`: a day computed
    /// before its end (as `auth up` does for today) expects only the
    /// intervals that have begun. `installations` may hold any others; they
    /// are skipped.
    pub fn of_day(
        installations: impl IntoIterator<Item = InstalledPeriod>,
        days: &LocalDays,
        utilities: &[Utility],
        until_ms: i64,
    ) -> Self {
        let mut positions: FxHashMap<(Utility, u64, u64), usize> = FxHashMap::default();
        let mut meters: Vec<ExpectedMeter> = Vec::new();
        for installation in installations {
            if !utilities.contains(&installation.utility) {
                continue;
            }
            let day = days.range(installation.region);
            let (day_start, day_end) = (day.start, day.end.min(until_ms));
            let from = installation.valid_from_ms.max(day_start);
            let to = installation.valid_to_ms.map_or(day_end, |to| to.min(day_end));
            if from >= to {
                continue;
            }
            let interval_ms = i64::from(installation.interval_secs) * 1_000;
            let key = (installation.utility, installation.customer_id, installation.meter_id);
            let position = *positions.entry(key).or_insert_with(|| {
                meters.push(ExpectedMeter {
                    utility: installation.utility,
                    customer_id: installation.customer_id,
                    meter_id: installation.meter_id,
                    region: installation.region,
                    interval_ms,
                    phase_ms: day_start.rem_euclid(interval_ms),
                    periods: Vec::new(),
                    expected: 0,
                    plausible: installation.plausible,
                    ends_open: false,
                    registers: Vec::new(),
                });
                meters.len() - 1
            });
            let meter = &mut meters[position];
            meter.plausible = meter.plausible.widened(installation.plausible);
            meter.periods.push((from, to));
            if installation.cumulative {
                meter.registers.push(RegisterPeriod {
                    valid_from_ms: installation.valid_from_ms,
                    valid_to_ms: installation.valid_to_ms,
                    rollover: installation.rollover,
                });
            }
            meter.ends_open |= to == day_end && day_end < day.end;
            meter.expected += slots_in(from - meter.phase_ms, to - meter.phase_ms, meter.interval_ms);
        }
        meters.sort_unstable_by_key(|meter| (meter.utility, meter.customer_id, meter.meter_id));
        let mut customers: FxHashMap<(Utility, u64), Range<usize>> = FxHashMap::default();
        for (position, meter) in meters.iter_mut().enumerate() {
            meter.periods.sort_unstable();
            meter.registers.sort_unstable_by_key(|period| period.valid_from_ms);
            customers.entry((meter.utility, meter.customer_id)).or_insert(position..position).end = position + 1;
        }
        let seen = meters.iter().map(|_| AtomicBool::new(false)).collect();
        Self { meters, customers, seen }
    }

    /// [`Expectations::of_day`] of a registry held in memory (the simulated fleet's, a test's).
    pub fn of_registry(registry: &Registry, date: NaiveDate, utilities: &[Utility], until_ms: i64) -> Self {
        Self::of_day(registry.installations().into_iter().map(InstalledPeriod::from), &LocalDays::of(date), utilities, until_ms)
    }

    /// The cumulative meters of `utility`: customer and meter, and its region.
    pub fn cumulative_meters(&self, utility: Utility) -> impl Iterator<Item = ((u64, u64), Region)> + '_ {
        self.meters
            .iter()
            .filter(move |meter| meter.utility == utility && !meter.registers.is_empty())
            .map(|meter| ((meter.customer_id, meter.meter_id), meter.region))
    }

    /// The positions of a customer's meters, ordered by meter.
    pub fn meters_of(&self, utility: Utility, customer_id: u64) -> Range<usize> {
        self.customers.get(&(utility, customer_id)).cloned().unwrap_or(0..0)
    }

    /// The meter at a position of [`Expectations::meters_of`], marked as seen:
    /// a fold counted its day.
    pub fn visit(&self, position: usize) -> &ExpectedMeter {
        self.seen[position].store(true, Ordering::Relaxed);
        &self.meters[position]
    }

    /// The meter at a position of [`Expectations::meters_of`].
    pub fn meter(&self, position: usize) -> &ExpectedMeter {
        &self.meters[position]
    }

    /// The customers none of whose meters a fold has counted: they sent
    /// nothing on the day. Ordered by utility and customer, with their region.
    pub fn unvisited_customers(&self) -> Vec<(Utility, u64, Region)> {
        let mut customers: Vec<(Utility, u64, Region)> = self
            .customers
            .iter()
            .filter(|(_, range)| Range::clone(range).all(|position| !self.seen[position].load(Ordering::Relaxed)))
            .map(|(&(utility, customer_id), range)| (utility, customer_id, self.meters[range.start].region))
            .collect();
        customers.sort_unstable_by_key(|&(utility, customer_id, _)| (utility, customer_id));
        customers
    }

    pub fn len(&self) -> usize {
        self.meters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meters.is_empty()
    }
}

/// A residential meter in US-CA reading in the utility's own unit, for the batch's tests.
#[cfg(test)]
pub(crate) fn installed(
    meter_id: u64,
    customer_id: u64,
    utility: Utility,
    interval_secs: u32,
    valid_from_ms: i64,
    valid_to_ms: Option<i64>,
) -> auth_core::registry::Installation {
    use auth_core::registry::{Installation, MeterUnit, RegisterKind};
    Installation {
        meter_id,
        customer_id,
        premise_id: format!("P{customer_id}"),
        region: Region::from_code("US-CA").expect("a region"),
        utility,
        customer_kind: auth_core::CustomerKind::Residential,
        unit: MeterUnit::of(utility),
        multiplier: 1.0,
        register: RegisterKind::Interval,
        interval_secs,
        valid_from_ms,
        valid_to_ms,
        plausible_min: None,
        plausible_max: None,
        register_rollover: None,
    }
}

#[cfg(test)]
mod tests {
    use auth_core::registry::Installation;
    use auth_master::DAY_MS;

    use super::*;

    const QUARTER: i64 = 900_000;

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 4).expect("a date")
    }

    /// The tests' meters are Californian.
    fn local_start() -> i64 {
        auth_core::local_day::day_start_ms(Region::from_code("US-CA").expect("California"), date())
    }

    fn installation(meter_id: u64, customer_id: u64, valid_from_ms: i64, valid_to_ms: Option<i64>) -> Installation {
        installed(meter_id, customer_id, Utility::Electricity, 900, valid_from_ms, valid_to_ms)
    }

    #[test]
    fn a_meter_exchanged_during_the_day_expects_each_part_of_it() {
        let start = local_start();
        let exchange = start + 10 * 3_600_000 + 5 * 60_000;
        let mut registry = Registry::default();
        registry.set_meter(1, vec![installation(1, 7, 0, Some(exchange))]);
        registry.set_meter(2, vec![installation(2, 7, exchange, None)]);
        registry.set_meter(3, vec![installation(3, 8, 0, Some(start))]);
        let expectations = Expectations::of_registry(&registry, date(), &[Utility::Electricity], i64::MAX);
        assert_eq!(expectations.len(), 2, "meter 3 was removed before the day");
        let meters = expectations.meters_of(Utility::Electricity, 7);
        assert_eq!(meters.len(), 2, "the old meter and the new one");
        let old = expectations.visit(meters.start);
        let new = expectations.visit(meters.start + 1);
        assert_eq!((old.meter_id, new.meter_id), (1, 2));
        assert_eq!(old.expected + new.expected, 96, "a day of quarter hours, whichever meter read them");
        assert_eq!((old.expected, new.expected), (41, 55), "slots 00:00 to 10:00 on the old, 10:15 to 23:45 on the new");
        assert_eq!(old.slot_of(start + 10 * 3_600_000 + 60_000), Some((start + 10 * 3_600_000) / QUARTER));
        assert_eq!(new.slot_of(start + 10 * 3_600_000 + 7 * 60_000), None, "the 10:00 slot began before its installation");
        assert_eq!(new.slot_of(start + DAY_MS), None, "the next day");
        assert_eq!(old.slots().count() as u64, old.expected);
        assert_eq!(new.slots().next(), Some((start + 10 * 3_600_000 + QUARTER) / QUARTER));
        assert_eq!(new.slots().last(), Some((start + DAY_MS) / QUARTER - 1));
        assert!(expectations.unvisited_customers().is_empty());
    }

    #[test]
    fn meters_never_visited_are_the_silent_ones() {
        let mut registry = Registry::default();
        registry.set_meter(1, vec![installation(1, 7, 0, None)]);
        registry.set_meter(2, vec![installation(2, 8, 0, None)]);
        let expectations = Expectations::of_registry(&registry, date(), &[Utility::Electricity, Utility::Gas], i64::MAX);
        expectations.visit(expectations.meters_of(Utility::Electricity, 7).start);
        assert!(expectations.meters_of(Utility::Electricity, 9).is_empty(), "meter 2 belongs to customer 8");
        let region = Region::from_code("US-CA").expect("a region");
        assert_eq!(expectations.unvisited_customers(), vec![(Utility::Electricity, 8, region)]);
        assert!(Expectations::of_registry(&registry, date(), &[Utility::Gas], i64::MAX).is_empty());
    }

    #[test]
    fn a_day_computed_before_its_end_expects_the_intervals_begun() {
        let mut registry = Registry::default();
        registry.set_meter(1, vec![installation(1, 7, 0, None)]);
        let noon = local_start() + 12 * 3_600_000 + 1;
        let expectations = Expectations::of_registry(&registry, date(), &[Utility::Electricity], noon);
        assert_eq!(expectations.meter(0).expected, 49, "00:00 to 12:00 inclusive");
        let before = Expectations::of_registry(&registry, date(), &[Utility::Electricity], local_start());
        assert!(before.is_empty(), "nothing is expected of a day not begun");
    }
}
