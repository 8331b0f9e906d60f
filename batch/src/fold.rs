//! The day's outputs, folded from per customer and hour sums.

use std::collections::HashMap;
use std::sync::Arc;

use auth_core::registry::ValueRange;
use auth_core::spec::ValidationSpec;
use auth_core::{Region, Utility};
use auth_master::DAY_MS;
use rustc_hash::FxHashMap;

use auth_results::IntervalEdit;

use crate::TOP_CUSTOMERS;
use crate::completeness::Expectations;
use crate::job::DayInputs;

/// One customer's usage of one utility over a day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerDay {
    pub utility: Utility,
    pub customer_id: u64,
    pub region: Region,
    pub total: f64,
    pub min_value: f64,
    pub max_value: f64,
    pub readings: u64,
    /// The UTC hour (0-23) with the most usage; the earliest of equal ones.
    pub peak_hour: u8,
    pub peak_hour_total: f64,
    /// Intervals the registry expected of the customer's meters of the
    /// utility that day ([`crate::completeness`]); 0 for meters it does not know.
    pub expected_intervals: u64,
    /// Expected intervals with a reading.
    pub received_intervals: u64,
    /// Readings the validation rules flagged ([`SuspectInterval`]).
    pub suspect_intervals: u64,
    /// Intervals whose value an operator's edit set ([`EditedInterval`]).
    pub edited_intervals: u64,
}

impl CustomerDay {
    /// Received over expected intervals; `None` when nothing was expected.
    pub fn completeness(&self) -> Option<f64> {
        (self.expected_intervals > 0).then(|| self.received_intervals as f64 / self.expected_intervals as f64)
    }
}

/// A meter that missed some of the intervals the registry expected of it on a day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeterGap {
    pub utility: Utility,
    pub meter_id: u64,
    pub customer_id: u64,
    pub region: Region,
    pub interval_secs: u32,
    pub expected_intervals: u64,
    pub received_intervals: u64,
    /// Its last reading of the day; `None`: it sent nothing.
    pub last_reading_ms: Option<i64>,
}

impl MeterGap {
    pub fn missing_intervals(&self) -> u64 {
        self.expected_intervals - self.received_intervals
    }
}

/// Why a validation rule flagged an interval ([`ValidationSpec`], and the
/// registry's plausible bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SuspectRule {
    /// Outside the plausible bounds of the meter's installation.
    Range,
    /// Far above the meter's typical maximum of the day.
    Spike,
    /// One of a run of readings with the same non-zero value.
    Frozen,
}

impl SuspectRule {
    pub const ALL: [SuspectRule; 3] = [SuspectRule::Range, SuspectRule::Spike, SuspectRule::Frozen];

    pub fn as_str(self) -> &'static str {
        match self {
            SuspectRule::Range => "range",
            SuspectRule::Spike => "spike",
            SuspectRule::Frozen => "frozen",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|rule| rule.as_str() == text)
    }
}

/// A reading a validation rule flagged `suspect`: it is kept and counted in
/// every total, and listed for an operator to check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuspectInterval {
    pub utility: Utility,
    pub meter_id: u64,
    pub customer_id: u64,
    pub region: Region,
    pub ts_ms: i64,
    pub value: f64,
    pub rule: SuspectRule,
}

/// An interval whose value an operator's edit set ([`crate::edits`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EditedInterval {
    pub utility: Utility,
    pub meter_id: u64,
    pub customer_id: u64,
    pub region: Region,
    pub ts_ms: i64,
    /// The reading the edit replaced; `None`: the meter sent none, the edit filled a gap.
    pub read_value: Option<f64>,
    pub value: f64,
}

/// One region's usage of one utility in one UTC hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionHour {
    pub utility: Utility,
    pub region: Region,
    pub hour: u8,
    pub total: f64,
    pub readings: u64,
    pub customers: u64,
}

/// A place in a region's list of largest customers for a utility.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopCustomer {
    pub utility: Utility,
    pub region: Region,
    /// 1 for the largest.
    pub position: u32,
    pub customer_id: u64,
    pub total: f64,
}

/// A utility's day over every customer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UtilityTotal {
    pub total: f64,
    pub readings: u64,
}

/// Everything the batch computes for one date.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayOutputs {
    /// Ordered by utility and customer.
    pub customers: Vec<CustomerDay>,
    /// Ordered by utility, region and hour.
    pub region_hours: Vec<RegionHour>,
    /// Ordered by utility, region and position.
    pub top_customers: Vec<TopCustomer>,
    pub totals: Vec<(Utility, UtilityTotal)>,
    /// Meters with missing intervals, ordered by utility, meter and customer.
    pub meter_gaps: Vec<MeterGap>,
    /// Flagged readings, ordered by utility, meter, customer and event time.
    pub suspect_intervals: Vec<SuspectInterval>,
    /// Edited intervals, ordered by utility, meter, customer and event time.
    pub edited_intervals: Vec<EditedInterval>,
}

/// Where a reading sits in the master data's order: files are sorted by
/// customer, meter, event time and log offset, so a repeated reading (same
/// meter and event time) follows its first copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadingKey {
    pub customer_id: u64,
    pub meter_id: u64,
    pub ts_ms: i64,
    pub log_offset: u64,
}

impl ReadingKey {
    fn same_reading(&self, other: &Self) -> bool {
        (self.customer_id, self.meter_id, self.ts_ms) == (other.customer_id, other.meter_id, other.ts_ms)
    }
}

/// Readings came in another order than the master data's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("readings are not ordered by customer, meter, event time and offset: {after:?} came after {before:?}")]
pub struct OutOfOrder {
    pub before: ReadingKey,
    pub after: ReadingKey,
}

/// One customer's readings in one UTC hour.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HourSums {
    total: f64,
    min_value: f64,
    max_value: f64,
    readings: u64,
}

const NO_READINGS: HourSums = HourSums { total: 0.0, min_value: f64::INFINITY, max_value: f64::NEG_INFINITY, readings: 0 };

const HOUR_MS: i64 = 3_600_000;

/// One meter's readings of the day so far, against what the registry expects.
struct MeterTally {
    meter_id: u64,
    /// Its place in the expectations; `None`: the registry expects nothing of it.
    expected_at: Option<usize>,
    last_slot: Option<i64>,
    received: u64,
    last_reading_ms: i64,
}

/// Folds one utility's readings of one log partition, in the master data's
/// order, one customer at a time: the first copy of a repeated reading
/// counts (its offset is the lowest), as in the stream. Each meter's day is
/// collected, the operators' edits applied to it, validated and summed into
/// its customer's hours. Memory holds one customer's hours and one meter's
/// day, however many readings there are.
pub struct ReadingFold {
    utility: Utility,
    expectations: Arc<Expectations>,
    edits: Arc<crate::edits::Edits>,
    validation: Validation,
    customer: Option<(u64, Region)>,
    hours: [HourSums; 24],
    meter: Option<MeterTally>,
    /// The current meter's readings of the day (event time, value), for the edits and the validation rules.
    meter_readings: Vec<(i64, f64)>,
    /// The event times of the current meter's edited or approved intervals, ordered.
    exempt: Vec<i64>,
    /// The customer's edits, ordered by meter and event time, and the first not applied yet.
    customer_edits: Vec<IntervalEdit>,
    next_edit: usize,
    /// The customer's expected and received intervals over its meters so far.
    intervals: (u64, u64),
    /// The customer's flagged and edited readings so far.
    suspects: u64,
    edited: u64,
    last: Option<ReadingKey>,
    day: DayFold,
}

impl ReadingFold {
    pub fn new(utility: Utility, inputs: DayInputs, rules: ValidationSpec) -> Self {
        Self {
            utility,
            expectations: inputs.expectations,
            edits: inputs.edits,
            validation: Validation { rules, scratch: Vec::new() },
            customer: None,
            hours: [NO_READINGS; 24],
            meter: None,
            meter_readings: Vec::new(),
            exempt: Vec::new(),
            customer_edits: Vec::new(),
            next_edit: 0,
            intervals: (0, 0),
            suspects: 0,
            edited: 0,
            last: None,
            day: DayFold::default(),
        }
    }

    /// Folds the edits of a customer none of whose meters sent a reading
    /// that day (by then, every reading of this fold is pushed).
    pub fn push_edits_only(&mut self, customer_id: u64, region: Region) {
        self.close_customer();
        self.open_customer(customer_id, region);
    }

    fn open_customer(&mut self, customer_id: u64, region: Region) {
        self.customer = Some((customer_id, region));
        if !self.edits.is_empty() {
            self.customer_edits.extend_from_slice(self.edits.of_customer(self.utility, customer_id));
        }
    }

    pub fn push(&mut self, key: ReadingKey, region: Region, value: f64) -> Result<(), OutOfOrder> {
        if let Some(last) = self.last {
            if key < last {
                return Err(OutOfOrder { before: last, after: key });
            }
            if key.same_reading(&last) {
                return Ok(());
            }
        }
        self.last = Some(key);
        match self.customer {
            Some((customer_id, _)) if customer_id == key.customer_id => {}
            _ => {
                self.close_customer();
                self.open_customer(key.customer_id, region);
            }
        }
        self.tally(key, value);
        Ok(())
    }

    /// Counts the reading's interval for its meter, once per interval.
    fn tally(&mut self, key: ReadingKey, value: f64) {
        if self.meter.as_ref().is_none_or(|meter| meter.meter_id != key.meter_id) {
            self.close_meter();
            self.settle_edited_only_meters(Some(key.meter_id));
            let expected_at = self.expectations.visit(self.utility, key.customer_id, key.meter_id);
            self.meter = Some(MeterTally { meter_id: key.meter_id, expected_at, last_slot: None, received: 0, last_reading_ms: key.ts_ms });
        }
        let Some(meter) = self.meter.as_mut() else { return };
        meter.last_reading_ms = key.ts_ms;
        self.meter_readings.push((key.ts_ms, value));
        let Some(expected_at) = meter.expected_at else { return };
        let slot = self.expectations.meter(expected_at).slot_of(key.ts_ms);
        if slot.is_some() && slot != meter.last_slot {
            meter.last_slot = slot;
            meter.received += 1;
        }
    }

    fn close_meter(&mut self) {
        let Some(tally) = self.meter.take() else { return };
        let plausible = tally.expected_at.map_or(ValueRange::ANY, |at| self.expectations.meter(at).plausible);
        self.settle_meter(tally.meter_id, plausible);
        let Some(expected_at) = tally.expected_at else { return };
        let expected = self.expectations.meter(expected_at);
        self.intervals.0 += expected.expected;
        self.intervals.1 += tally.received;
        if tally.received < expected.expected {
            self.day.meter_gaps.push(MeterGap {
                utility: self.utility,
                meter_id: tally.meter_id,
                customer_id: expected.customer_id,
                region: expected.region,
                interval_secs: (expected.interval_ms / 1_000) as u32,
                expected_intervals: expected.expected,
                received_intervals: tally.received,
                last_reading_ms: Some(tally.last_reading_ms),
            });
        }
    }

    /// Settles the customer's meters with edits that sort before
    /// `before` (all of them for `None`) and sent no reading; called
    /// between meters, when no meter's readings are being collected.
    fn settle_edited_only_meters(&mut self, before: Option<u64>) {
        while let Some(meter_id) = self.customer_edits.get(self.next_edit).map(|edit| edit.meter_id)
            && before.is_none_or(|before| meter_id < before)
        {
            self.settle_meter(meter_id, ValueRange::ANY);
        }
    }

    /// Applies the meter's edits to its day's readings, flags what the
    /// validation rules find suspect (outside `plausible` among them) and
    /// adds the readings to the customer's hours.
    fn settle_meter(&mut self, meter_id: u64, plausible: ValueRange) {
        let Some((customer_id, region)) = self.customer else { return };
        let utility = self.utility;
        self.exempt.clear();
        while let Some(edit) = self.customer_edits.get(self.next_edit).filter(|edit| edit.meter_id == meter_id) {
            self.next_edit += 1;
            let at = self.meter_readings.binary_search_by_key(&edit.ts_ms, |&(ts_ms, _)| ts_ms);
            let Some(value) = edit.value else {
                if at.is_ok() {
                    self.exempt.push(edit.ts_ms);
                }
                continue;
            };
            let read_value = match at {
                Ok(at) => Some(std::mem::replace(&mut self.meter_readings[at].1, value)),
                Err(at) => {
                    self.meter_readings.insert(at, (edit.ts_ms, value));
                    None
                }
            };
            self.exempt.push(edit.ts_ms);
            self.edited += 1;
            self.day.edited_intervals.push(EditedInterval { utility, meter_id, customer_id, region, ts_ms: edit.ts_ms, read_value, value });
        }
        let before = self.day.suspect_intervals.len();
        self.validation.flag(&self.meter_readings, plausible, &self.exempt, |ts_ms, value, rule| SuspectInterval {
            utility,
            meter_id,
            customer_id,
            region,
            ts_ms,
            value,
            rule,
        }, &mut self.day.suspect_intervals);
        self.suspects += (self.day.suspect_intervals.len() - before) as u64;
        for &(ts_ms, value) in &self.meter_readings {
            let hour = &mut self.hours[(ts_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize];
            hour.total += value;
            hour.min_value = hour.min_value.min(value);
            hour.max_value = hour.max_value.max(value);
            hour.readings += 1;
        }
        self.meter_readings.clear();
    }

    fn close_customer(&mut self) {
        self.close_meter();
        self.settle_edited_only_meters(None);
        if let Some((customer_id, region)) = self.customer.take() {
            let quality = Quality { intervals: self.intervals, suspect: self.suspects, edited: self.edited };
            self.day.add_customer(self.utility, customer_id, region, &self.hours, quality);
            if !self.customer_edits.is_empty() {
                self.day.edited_customers.push((self.utility, customer_id));
            }
            self.hours = [NO_READINGS; 24];
            self.intervals = (0, 0);
            self.suspects = 0;
            self.edited = 0;
            self.customer_edits.clear();
            self.next_edit = 0;
        }
    }

    pub fn finish(mut self) -> DayFold {
        self.close_customer();
        self.day
    }
}

/// The validation rules applied to one meter's day at a time.
struct Validation {
    rules: ValidationSpec,
    /// The non-zero values of the meter's day, to find its typical maximum.
    scratch: Vec<f64>,
}

/// Non-zero intervals a meter's day needs before its typical maximum is trusted.
const SPIKE_MIN_INTERVALS: usize = 8;

impl Validation {
    /// Appends to `flagged` each reading of `readings` (one meter's day, in
    /// event time order) that a rule finds suspect (outside `plausible`,
    /// a spike, frozen), but those at the times of `exempt` (ordered: an
    /// operator edited or approved them); a reading is flagged once, by the
    /// first rule it breaks.
    fn flag<T>(
        &mut self,
        readings: &[(i64, f64)],
        plausible: ValueRange,
        exempt: &[i64],
        suspect: impl Fn(i64, f64, SuspectRule) -> T,
        flagged: &mut Vec<T>,
    ) {
        let spike_above = self.spike_threshold(readings);
        let frozen_run = self.rules.frozen_readings as usize;
        let mut run_start = 0;
        for end in 1..=readings.len() {
            let run_ends = end == readings.len() || readings[end].1 != readings[run_start].1;
            if !run_ends {
                continue;
            }
            let frozen = frozen_run > 0 && end - run_start >= frozen_run && readings[run_start].1 != 0.0;
            for &(ts_ms, value) in &readings[run_start..end] {
                if !exempt.is_empty() && exempt.binary_search(&ts_ms).is_ok() {
                    continue;
                }
                if !plausible.contains(value) {
                    flagged.push(suspect(ts_ms, value, SuspectRule::Range));
                } else if spike_above.is_some_and(|threshold| value > threshold) {
                    flagged.push(suspect(ts_ms, value, SuspectRule::Spike));
                } else if frozen {
                    flagged.push(suspect(ts_ms, value, SuspectRule::Frozen));
                }
            }
            run_start = end;
        }
    }

    /// `spikeFactor` times the 90th percentile of the day's non-zero values;
    /// `None` when the rule is off or the day has too few of them.
    fn spike_threshold(&mut self, readings: &[(i64, f64)]) -> Option<f64> {
        if self.rules.spike_factor == 0.0 {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend(readings.iter().map(|&(_, value)| value).filter(|&value| value != 0.0));
        if self.scratch.len() < SPIKE_MIN_INTERVALS {
            return None;
        }
        let at = (self.scratch.len() - 1) * 9 / 10;
        let (_, typical_maximum, _) = self.scratch.select_nth_unstable_by(at, f64::total_cmp);
        Some(self.rules.spike_factor * *typical_maximum)
    }
}

/// A customer day's counts of intervals: expected and received, suspect, edited.
struct Quality {
    intervals: (u64, u64),
    suspect: u64,
    edited: u64,
}

/// Collects customers' days, from any number of [`ReadingFold`]s.
#[derive(Default)]
pub struct DayFold {
    customers: Vec<CustomerDay>,
    region_hours: FxHashMap<(Utility, Region, u8), RegionHour>,
    meter_gaps: Vec<MeterGap>,
    suspect_intervals: Vec<SuspectInterval>,
    edited_intervals: Vec<EditedInterval>,
    /// The customers whose edits a fold applied.
    edited_customers: Vec<(Utility, u64)>,
}

impl DayFold {
    fn add_customer(&mut self, utility: Utility, customer_id: u64, region: Region, hours: &[HourSums; 24], quality: Quality) {
        let Quality { intervals: (expected_intervals, received_intervals), suspect: suspect_intervals, edited: edited_intervals } = quality;
        let mut day = CustomerDay {
            utility,
            customer_id,
            region,
            total: 0.0,
            min_value: f64::INFINITY,
            max_value: f64::NEG_INFINITY,
            readings: 0,
            peak_hour: 0,
            peak_hour_total: f64::NEG_INFINITY,
            expected_intervals,
            received_intervals,
            suspect_intervals,
            edited_intervals,
        };
        for (hour, sums) in (0u8..).zip(hours).filter(|(_, sums)| sums.readings > 0) {
            day.total += sums.total;
            day.min_value = day.min_value.min(sums.min_value);
            day.max_value = day.max_value.max(sums.max_value);
            day.readings += sums.readings;
            if sums.total > day.peak_hour_total {
                day.peak_hour = hour;
                day.peak_hour_total = sums.total;
            }
            let region_hour = self.region_hours.entry((utility, region, hour)).or_insert(RegionHour {
                utility,
                region,
                hour,
                total: 0.0,
                readings: 0,
                customers: 0,
            });
            region_hour.total += sums.total;
            region_hour.readings += sums.readings;
            region_hour.customers += 1;
        }
        self.customers.push(day);
    }

    /// Adds another fold's customers, which must not be in this one.
    pub fn merge(&mut self, other: DayFold) {
        self.customers.extend(other.customers);
        self.meter_gaps.extend(other.meter_gaps);
        self.suspect_intervals.extend(other.suspect_intervals);
        self.edited_intervals.extend(other.edited_intervals);
        self.edited_customers.extend(other.edited_customers);
        for (key, hour) in other.region_hours {
            self.region_hours
                .entry(key)
                .and_modify(|mine| {
                    mine.total += hour.total;
                    mine.readings += hour.readings;
                    mine.customers += hour.customers;
                })
                .or_insert(hour);
        }
    }

    /// The customers of `utility` with edits that no fold merged into this
    /// one applied: none of their meters sent a reading that day.
    pub fn customers_with_edits_unapplied(&self, edits: &crate::edits::Edits, utility: Utility) -> Vec<(u64, Region)> {
        let applied: rustc_hash::FxHashSet<(Utility, u64)> = self.edited_customers.iter().copied().collect();
        edits.customers(utility).into_iter().filter(|&(customer_id, _)| !applied.contains(&(utility, customer_id))).collect()
    }

    /// The outputs, once every fold is merged: the meters of `expectations`
    /// no fold visited sent nothing, and count as gaps of their customers.
    pub fn finish(self, expectations: &Expectations) -> DayOutputs {
        let mut customers = self.customers;
        customers.sort_unstable_by_key(|day| (day.utility, day.customer_id));
        let mut meter_gaps = self.meter_gaps;
        for silent in expectations.unvisited() {
            if let Ok(at) = customers.binary_search_by_key(&(silent.utility, silent.customer_id), |day| (day.utility, day.customer_id)) {
                customers[at].expected_intervals += silent.expected;
            }
            meter_gaps.push(MeterGap {
                utility: silent.utility,
                meter_id: silent.meter_id,
                customer_id: silent.customer_id,
                region: silent.region,
                interval_secs: (silent.interval_ms / 1_000) as u32,
                expected_intervals: silent.expected,
                received_intervals: 0,
                last_reading_ms: None,
            });
        }
        meter_gaps.sort_unstable_by_key(|gap| (gap.utility, gap.meter_id, gap.customer_id));
        let mut suspect_intervals = self.suspect_intervals;
        suspect_intervals.sort_unstable_by_key(|suspect| (suspect.utility, suspect.meter_id, suspect.customer_id, suspect.ts_ms));
        let mut edited_intervals = self.edited_intervals;
        edited_intervals.sort_unstable_by_key(|edited| (edited.utility, edited.meter_id, edited.customer_id, edited.ts_ms));
        let mut region_hours: Vec<RegionHour> = self.region_hours.into_values().collect();
        region_hours.sort_unstable_by_key(|hour| (hour.utility, hour.region, hour.hour));
        let mut by_region: HashMap<(Utility, Region), Vec<&CustomerDay>> = HashMap::new();
        let mut totals: Vec<(Utility, UtilityTotal)> = Vec::new();
        for day in &customers {
            by_region.entry((day.utility, day.region)).or_default().push(day);
            match totals.last_mut() {
                Some((utility, total)) if *utility == day.utility => {
                    total.total += day.total;
                    total.readings += day.readings;
                }
                _ => totals.push((day.utility, UtilityTotal { total: day.total, readings: day.readings })),
            }
        }
        let mut top_customers = Vec::new();
        for ((utility, region), mut days) in by_region {
            days.sort_unstable_by(|a, b| b.total.total_cmp(&a.total).then(a.customer_id.cmp(&b.customer_id)));
            for (index, day) in days.into_iter().take(TOP_CUSTOMERS).enumerate() {
                top_customers.push(TopCustomer {
                    utility,
                    region,
                    position: index as u32 + 1,
                    customer_id: day.customer_id,
                    total: day.total,
                });
            }
        }
        top_customers.sort_unstable_by_key(|top| (top.utility, top.region, top.position));
        DayOutputs { customers, region_hours, top_customers, totals, meter_gaps, suspect_intervals, edited_intervals }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn key(customer_id: u64, meter_id: u64, hour: i64, log_offset: u64) -> ReadingKey {
        ReadingKey { customer_id, meter_id, ts_ms: 20 * DAY_MS + hour * HOUR, log_offset }
    }

    #[test]
    fn folds_days_peaks_regions_and_tops_keeping_first_copies() {
        let region = Region::from_code("US-CA").expect("a region");
        let mut fold = ReadingFold::new(Utility::Water, DayInputs::default(), ValidationSpec::default());
        let readings = [
            (key(7, 1, 2, 10), 1.0),
            (key(7, 1, 2, 11), 99.0),
            (key(7, 1, 5, 3), 3.0),
            (key(7, 2, 2, 4), 2.0),
            (key(7, 2, 9, 5), 1.0),
            (key(8, 3, 9, 6), 10.0),
        ];
        for (key, value) in readings {
            fold.push(key, region, value).expect("in order");
        }
        let outputs = fold.finish().finish(&Expectations::none());
        let seven = outputs.customers[0];
        assert_eq!((seven.customer_id, seven.total, seven.readings, seven.peak_hour, seven.peak_hour_total), (7, 7.0, 4, 2, 3.0));
        assert_eq!((seven.min_value, seven.max_value), (1.0, 3.0));
        let hours: Vec<_> = outputs.region_hours.iter().map(|h| (h.hour, h.total, h.readings, h.customers)).collect();
        assert_eq!(hours, vec![(2, 3.0, 2, 1), (5, 3.0, 1, 1), (9, 11.0, 2, 2)]);
        assert_eq!(outputs.top_customers.iter().map(|t| (t.position, t.customer_id)).collect::<Vec<_>>(), vec![(1, 8), (2, 7)]);
        assert_eq!(outputs.totals, vec![(Utility::Water, UtilityTotal { total: 17.0, readings: 5 })]);
    }

    #[test]
    fn completeness_counts_each_expected_interval_once_and_lists_gaps_and_silent_meters() {
        use auth_core::registry::Registry;
        let region = Region::from_code("US-CA").expect("a region");
        let date = auth_master::date_of(20 * DAY_MS);
        let installed = |meter_id, customer_id| crate::completeness::installed(meter_id, customer_id, Utility::Water, 3_600, 0, None);
        let mut registry = Registry::default();
        for (meter_id, customer_id) in [(1, 7), (2, 7), (3, 8), (4, 9)] {
            registry.set_meter(meter_id, vec![installed(meter_id, customer_id)]);
        }
        let expectations = Arc::new(crate::completeness::Expectations::of_registry(&registry, date, &[Utility::Water], i64::MAX));
        let mut fold = ReadingFold::new(Utility::Water, DayInputs { expectations: Arc::clone(&expectations), ..DayInputs::default() }, ValidationSpec::default());
        for hour in 0..24 {
            fold.push(key(7, 1, hour, hour as u64), region, 1.0).expect("in order");
        }
        fold.push(key(8, 3, 4, 100), region, 1.0).expect("in order");
        fold.push(key(8, 3, 4, 101), region, 1.0).expect("a second copy, not counted");
        let mut twice_in_one_hour = key(8, 3, 4, 102);
        twice_in_one_hour.ts_ms += 60_000;
        fold.push(twice_in_one_hour, region, 1.0).expect("in order");
        fold.push(key(8, 3, 5, 103), region, 1.0).expect("in order");
        fold.push(key(10, 5, 5, 104), region, 1.0).expect("a meter the registry does not know");
        let outputs = fold.finish().finish(&expectations);
        let intervals: Vec<_> =
            outputs.customers.iter().map(|c| (c.customer_id, c.expected_intervals, c.received_intervals, c.completeness())).collect();
        assert_eq!(intervals, vec![(7, 48, 24, Some(0.5)), (8, 24, 2, Some(2.0 / 24.0)), (10, 0, 0, None)]);
        let gaps: Vec<_> = outputs
            .meter_gaps
            .iter()
            .map(|g| (g.meter_id, g.customer_id, g.expected_intervals, g.missing_intervals(), g.last_reading_ms))
            .collect();
        let at = |hour: i64, minutes: i64| Some(20 * DAY_MS + hour * HOUR + minutes * 60_000);
        assert_eq!(gaps, vec![(2, 7, 24, 24, None), (3, 8, 24, 22, at(5, 0)), (4, 9, 24, 24, None)]);
    }

    fn flagged(readings: &[(i64, f64)], rules: ValidationSpec) -> Vec<(i64, SuspectRule)> {
        let mut validation = Validation { rules, scratch: Vec::new() };
        let mut flagged = Vec::new();
        validation.flag(readings, ValueRange::ANY, &[], |ts_ms, _, rule| (ts_ms, rule), &mut flagged);
        flagged
    }

    #[test]
    fn spikes_and_frozen_runs_are_flagged_once_each() {
        let rules = ValidationSpec { spike_factor: 10.0, frozen_readings: 3 };
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 200.0, 6.0, 7.0, 8.0, 9.0, 10.0, 99.0];
        let readings: Vec<(i64, f64)> = values.iter().enumerate().map(|(at, &value)| (at as i64, value)).collect();
        assert_eq!(flagged(&readings, rules), vec![(5, SuspectRule::Spike)], "99 is not above 10 times the 90th percentile, 10");
        let runs = [(0, 0.0), (1, 0.0), (2, 0.0), (3, 4.0), (4, 4.0), (5, 4.0), (6, 4.0), (7, 2.0), (8, 2.0)];
        let frozen: Vec<i64> = flagged(&runs, rules).into_iter().map(|(at, _)| at).collect();
        assert_eq!(frozen, vec![3, 4, 5, 6], "zeros are no frozen register; a run of two is below three");
        assert!(flagged(&runs, ValidationSpec { spike_factor: 0.0, frozen_readings: 0 }).is_empty(), "rules off");
        let few = [(0, 1.0), (1, 1000.0)];
        assert!(flagged(&few, rules).is_empty(), "two readings tell no typical maximum");
    }

    #[test]
    fn readings_outside_the_plausible_range_are_flagged_by_that_rule_first() {
        let mut validation = Validation { rules: ValidationSpec { spike_factor: 10.0, frozen_readings: 3 }, scratch: Vec::new() };
        let plausible = ValueRange { min: Some(1.0), max: Some(50.0) };
        let values = [0.5, 2.0, 3.0, 4.0, 5.0, 2.0, 3.0, 4.0, 5.0, 900.0];
        let readings: Vec<(i64, f64)> = values.iter().enumerate().map(|(at, &value)| (at as i64, value)).collect();
        let mut flagged = Vec::new();
        validation.flag(&readings, plausible, &[], |ts_ms, _, rule| (ts_ms, rule), &mut flagged);
        assert_eq!(flagged, vec![(0, SuspectRule::Range), (9, SuspectRule::Range)], "900 is a spike too, flagged once");
        flagged.clear();
        validation.flag(&readings, plausible, &[9], |ts_ms, _, rule| (ts_ms, rule), &mut flagged);
        assert_eq!(flagged, vec![(0, SuspectRule::Range)], "an approved reading is not flagged");
    }

    #[test]
    fn edits_replace_readings_fill_gaps_and_approvals_clear_flags() {
        use auth_results::IntervalEdit;
        let region = Region::from_code("US-CA").expect("a region");
        let edit = |customer_id, meter_id, hour, value| IntervalEdit {
            utility: Utility::Gas,
            meter_id,
            ts_ms: key(customer_id, meter_id, hour, 0).ts_ms,
            customer_id,
            region,
            value,
        };
        let edits = crate::edits::Edits::new([
            edit(7, 2, 4, None),
            edit(7, 2, 3, Some(5.0)),
            edit(7, 2, 8, Some(2.0)),
            edit(7, 1, 1, Some(4.0)),
            edit(9, 3, 0, Some(1.5)),
        ]);
        let inputs = DayInputs { edits: Arc::new(edits), ..DayInputs::default() };
        let rules = ValidationSpec { spike_factor: 0.0, frozen_readings: 3 };
        let mut fold = ReadingFold::new(Utility::Gas, inputs.clone(), rules);
        for hour in [2, 3, 4, 5, 6] {
            fold.push(key(7, 2, hour, hour as u64), region, 1.0).expect("in order");
        }
        let mut day = fold.finish();
        let unapplied = day.customers_with_edits_unapplied(&inputs.edits, Utility::Gas);
        assert_eq!(unapplied, vec![(9, region)], "customer 9 sent nothing");
        let mut edits_only = ReadingFold::new(Utility::Gas, inputs.clone(), rules);
        for (customer_id, region) in unapplied {
            edits_only.push_edits_only(customer_id, region);
        }
        day.merge(edits_only.finish());
        let outputs = day.finish(&Expectations::none());

        let seven = outputs.customers[0];
        assert_eq!((seven.customer_id, seven.total, seven.readings), (7, 4.0 + 1.0 + 5.0 + 1.0 + 1.0 + 1.0 + 2.0, 7));
        assert_eq!((seven.edited_intervals, seven.suspect_intervals), (3, 2), "the approved hour 4 is not suspect");
        let nine = outputs.customers[1];
        assert_eq!((nine.customer_id, nine.total, nine.readings, nine.edited_intervals), (9, 1.5, 1, 1));
        let flagged: Vec<i64> = outputs.suspect_intervals.iter().map(|suspect| (suspect.ts_ms - 20 * DAY_MS) / HOUR).collect();
        assert_eq!(flagged, vec![5, 6], "hours 4 to 6 read 1.0 in a row once 3 is edited; 4 is approved");
        let edited: Vec<_> = outputs.edited_intervals.iter().map(|e| (e.meter_id, (e.ts_ms - 20 * DAY_MS) / HOUR, e.read_value, e.value)).collect();
        assert_eq!(edited, vec![(1, 1, None, 4.0), (2, 3, Some(1.0), 5.0), (2, 8, None, 2.0), (3, 0, None, 1.5)]);
    }

    #[test]
    fn readings_out_of_order_are_refused() {
        let region = Region::from_code("US-CA").expect("a region");
        let mut fold = ReadingFold::new(Utility::Gas, DayInputs::default(), ValidationSpec::default());
        fold.push(key(7, 1, 5, 3), region, 1.0).expect("first");
        let err = fold.push(key(7, 1, 2, 4), region, 1.0).expect_err("an earlier event time of the same meter");
        assert_eq!(err.after, key(7, 1, 2, 4));
    }

    #[test]
    fn folds_merge_customers_and_region_hours() {
        let region = Region::from_code("US-TX").expect("a region");
        let mut first = ReadingFold::new(Utility::Gas, DayInputs::default(), ValidationSpec::default());
        first.push(key(1, 1, 3, 0), region, 2.0).expect("in order");
        let mut second = ReadingFold::new(Utility::Gas, DayInputs::default(), ValidationSpec::default());
        second.push(key(2, 2, 3, 0), region, 5.0).expect("in order");
        let mut day = first.finish();
        day.merge(second.finish());
        let outputs = day.finish(&Expectations::none());
        assert_eq!(outputs.customers.iter().map(|c| c.customer_id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(outputs.region_hours.iter().map(|h| (h.total, h.customers)).collect::<Vec<_>>(), vec![(7.0, 2)]);
    }
}
