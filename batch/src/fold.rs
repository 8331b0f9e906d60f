//! The day's outputs, folded from per customer and hour sums.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use auth_core::registry::ValueRange;
use auth_core::spec::ValidationSpec;
use auth_core::local_day::{self, HOUR_MS, LocalDays, MAX_DAY_HOURS};
use auth_core::{Region, Utility};
use rustc_hash::{FxHashMap, FxHashSet};

use auth_results::IntervalEdit;

use crate::TOP_CUSTOMERS;
use crate::completeness::Expectations;
use crate::estimate::{Estimated, EstimatedRun, EstimationMethod, Estimator};
use crate::job::DayInputs;
use crate::registers::PreviousRegisters;

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
    /// The hour of the local day (0 to 24, counted from its start) with the
    /// most usage; the earliest of equal ones.
    pub peak_hour: u8,
    pub peak_hour_total: f64,
    /// The part of `total` and `readings` in the UTC date the local day
    /// starts on (the rest is in the next): a UTC day is the end of one
    /// local day and the start of the next ([`local_day::hours_in_first_utc_date`]).
    pub first_utc_date_total: f64,
    pub first_utc_date_readings: u64,
    /// Intervals the registry expected of the customer's meters of the
    /// utility that day ([`crate::completeness`]); 0 for meters it does not know.
    pub expected_intervals: u64,
    /// Expected intervals with a reading.
    pub received_intervals: u64,
    /// Readings the validation rules flagged ([`SuspectInterval`]).
    pub suspect_intervals: u64,
    /// Intervals whose value an operator's edit set ([`EditedInterval`]).
    pub edited_intervals: u64,
    /// Missing intervals the batch estimated ([`EstimatedRun`]); they
    /// count in the totals, not in `readings`.
    pub estimated_intervals: u64,
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
    /// Missing intervals the batch estimated.
    pub estimated_intervals: u64,
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
    /// A cumulative meter's register wrapped at its rollover ([`crate::registers`]).
    Rollover,
    /// A cumulative meter's register fell without wrapping: the interval counts nothing read.
    Reset,
    /// A cumulative meter's first register in its installation, or the first after a missing day.
    RegisterStart,
}

impl SuspectRule {
    pub const ALL: [SuspectRule; 6] =
        [SuspectRule::Range, SuspectRule::Spike, SuspectRule::Frozen, SuspectRule::Rollover, SuspectRule::Reset, SuspectRule::RegisterStart];

    pub fn as_str(self) -> &'static str {
        match self {
            SuspectRule::Range => "range",
            SuspectRule::Spike => "spike",
            SuspectRule::Frozen => "frozen",
            SuspectRule::Rollover => "rollover",
            SuspectRule::Reset => "reset",
            SuspectRule::RegisterStart => "registerStart",
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

/// One region's usage of one utility in one hour of its local day.
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
    /// The part of `total` that is estimates ([`EstimatedRun`]).
    pub estimated: f64,
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
    /// Runs of estimated intervals, ordered by utility, meter, customer and start.
    pub estimated_runs: Vec<EstimatedRun>,
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

/// One customer's readings and estimates in one hour of its local day.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HourSums {
    total: f64,
    min_value: f64,
    max_value: f64,
    readings: u64,
    estimates: u64,
}

impl HourSums {
    fn add(&mut self, value: f64) {
        self.total += value;
        self.min_value = self.min_value.min(value);
        self.max_value = self.max_value.max(value);
    }
}

const NO_READINGS: HourSums =
    HourSums { total: 0.0, min_value: f64::INFINITY, max_value: f64::NEG_INFINITY, readings: 0, estimates: 0 };


/// One meter's readings of the day so far, against what the registry expects.
struct MeterTally {
    meter_id: u64,
    /// Its place in the expectations; `None`: the registry expects nothing of it.
    expected_at: Option<usize>,
    last_slot: Option<i64>,
    received: u64,
    last_reading_ms: Option<i64>,
}

/// How long each output list of a [`DayFold`] was when a customer's fold began.
#[derive(Debug, Clone, Copy, Default)]
struct OutputMarks {
    meter_gaps: usize,
    suspect_intervals: usize,
    edited_intervals: usize,
    estimated_runs: usize,
}

/// Folds one utility's readings of one log partition, in the master data's
/// order, one customer at a time: the first copy of a repeated reading
/// counts (its offset is the lowest), as in the stream. Each meter's day is
/// collected, the operators' edits applied to it, validated and summed into
/// its customer's hours. A meter the registry expects but that sent nothing
/// is settled too, with the customer's other meters, and the intervals each
/// meter missed are estimated ([`crate::estimate`]). A customer whose gap
/// needs a profile before the profiles are loaded is deferred
/// ([`DayFold::deferred`]): its day is folded again once they are. Memory
/// holds one customer's hours and one meter's day, however many readings there are.
pub struct ReadingFold {
    utility: Utility,
    expectations: Arc<Expectations>,
    edits: Arc<crate::edits::Edits>,
    validation: Validation,
    estimator: Estimator,
    /// When set, the only customers folded; the others' readings are skipped.
    only: Option<Arc<FxHashSet<u64>>>,
    customer: Option<(u64, Region)>,
    /// The date's local day in each region, and the start of the current customer's.
    days: Arc<LocalDays>,
    day_start_ms: i64,
    /// The positions of the customer's expected meters, and the first not settled yet.
    customer_meters: Range<usize>,
    next_expected: usize,
    /// The customer's hours, from the start of its local day.
    hours: [HourSums; MAX_DAY_HOURS],
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
    /// The customer's flagged and edited readings, and estimated intervals, so far.
    suspects: u64,
    edited: u64,
    estimated: u64,
    /// A gap of the customer's needs a profile that is not loaded.
    needs_profiles: bool,
    marks: OutputMarks,
    /// The current meter's estimates (event time, value, method).
    estimates: Vec<(i64, f64, EstimationMethod)>,
    /// Cumulative meters' last registers of the day before ([`crate::registers`]).
    previous_registers: Arc<PreviousRegisters>,
    /// The current meter's intervals its registers' advances fill, and its
    /// flagged registers (event time, value, rule).
    register_spread: Vec<(i64, f64)>,
    register_flags: Vec<(i64, f64, SuspectRule)>,
    /// Room to rewrite a meter's day in.
    scratch: Vec<(i64, f64)>,
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
            estimator: Estimator::off(),
            only: None,
            customer: None,
            days: inputs.days,
            day_start_ms: 0,
            customer_meters: 0..0,
            next_expected: 0,
            hours: [NO_READINGS; MAX_DAY_HOURS],
            meter: None,
            meter_readings: Vec::new(),
            exempt: Vec::new(),
            customer_edits: Vec::new(),
            next_edit: 0,
            intervals: (0, 0),
            suspects: 0,
            edited: 0,
            estimated: 0,
            needs_profiles: false,
            marks: OutputMarks::default(),
            estimates: Vec::new(),
            previous_registers: Arc::default(),
            register_spread: Vec::new(),
            register_flags: Vec::new(),
            scratch: Vec::new(),
            last: None,
            day: DayFold::default(),
        }
    }

    /// The fold turning cumulative meters' registers into consumption, from
    /// their `previous` days' last registers on.
    pub fn with_previous_registers(self, previous: Arc<PreviousRegisters>) -> Self {
        Self { previous_registers: previous, ..self }
    }

    /// The fold estimating missing intervals with `estimator` (it estimates nothing otherwise).
    pub fn with_estimator(self, estimator: Estimator) -> Self {
        Self { estimator, ..self }
    }

    /// The fold of `customers` only: the others' readings are skipped.
    pub fn only(self, customers: Arc<FxHashSet<u64>>) -> Self {
        Self { only: Some(customers), ..self }
    }

    /// Folds a customer none of whose meters sent a reading that day: its
    /// edits, and its expected meters' gaps (by then, every reading of this
    /// fold is pushed).
    pub fn push_customer_without_readings(&mut self, customer_id: u64, region: Region) {
        self.close_customer();
        self.open_customer(customer_id, region);
    }

    fn open_customer(&mut self, customer_id: u64, region: Region) {
        self.customer = Some((customer_id, region));
        self.day_start_ms = self.days.range(region).start;
        if !self.edits.is_empty() {
            self.customer_edits.extend_from_slice(self.edits.of_customer(self.utility, customer_id));
        }
        self.customer_meters = self.expectations.meters_of(self.utility, customer_id);
        self.next_expected = self.customer_meters.start;
        self.marks = OutputMarks {
            meter_gaps: self.day.meter_gaps.len(),
            suspect_intervals: self.day.suspect_intervals.len(),
            edited_intervals: self.day.edited_intervals.len(),
            estimated_runs: self.day.estimated_runs.len(),
        };
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
        if !self.days.contains(region, key.ts_ms) {
            // Another local day's reading: the date folders hold every region's day.
            return Ok(());
        }
        if self.only.as_ref().is_some_and(|only| !only.contains(&key.customer_id)) {
            return Ok(());
        }
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
            self.settle_meters_without_readings(Some(key.meter_id));
            let expected_at = self.take_expected(key.meter_id);
            self.meter = Some(MeterTally { meter_id: key.meter_id, expected_at, last_slot: None, received: 0, last_reading_ms: None });
        }
        let Some(meter) = self.meter.as_mut() else { return };
        meter.last_reading_ms = Some(key.ts_ms);
        self.meter_readings.push((key.ts_ms, value));
        let Some(expected_at) = meter.expected_at else { return };
        let slot = self.expectations.meter(expected_at).slot_of(key.ts_ms);
        if slot.is_some() && slot != meter.last_slot {
            meter.last_slot = slot;
            meter.received += 1;
        }
    }

    /// The position of the customer's next expected meter when it is
    /// `meter_id`, marked as visited.
    fn take_expected(&mut self, meter_id: u64) -> Option<usize> {
        let position = self.next_expected;
        if position < self.customer_meters.end && self.expectations.meter(position).meter_id == meter_id {
            self.next_expected += 1;
            self.expectations.visit(position);
            return Some(position);
        }
        None
    }

    fn close_meter(&mut self) {
        let Some(tally) = self.meter.take() else { return };
        let received = match tally.expected_at {
            Some(at) if !self.expectations.meter(at).registers.is_empty() => self.registers_to_consumption(at),
            _ => tally.received,
        };
        let estimated = self.settle_meter(tally.meter_id, tally.expected_at, received);
        let Some(expected_at) = tally.expected_at else { return };
        let expected = self.expectations.meter(expected_at);
        self.intervals.0 += expected.expected;
        self.intervals.1 += received;
        if received < expected.expected {
            self.day.meter_gaps.push(MeterGap {
                utility: self.utility,
                meter_id: tally.meter_id,
                customer_id: expected.customer_id,
                region: expected.region,
                interval_secs: (expected.interval_ms / 1_000) as u32,
                expected_intervals: expected.expected,
                received_intervals: received,
                last_reading_ms: tally.last_reading_ms,
                estimated_intervals: estimated,
            });
        }
    }

    /// Rewrites the current meter's day of registers as consumption
    /// ([`crate::registers`]); returns how many of its expected intervals
    /// a reading now fills.
    fn registers_to_consumption(&mut self, expected_at: usize) -> u64 {
        let meter = self.expectations.meter(expected_at);
        let previous = self.customer.and_then(|(customer_id, _)| self.previous_registers.get(&(customer_id, meter.meter_id)).copied());
        self.register_spread.clear();
        self.register_flags.clear();
        crate::registers::to_consumption(
            meter,
            previous,
            &mut self.meter_readings,
            &mut self.scratch,
            &mut self.register_spread,
            &mut self.register_flags,
        );
        let (mut filled, mut last_slot) = (0, None);
        for &(ts_ms, _) in &self.meter_readings {
            let slot = meter.slot_of(ts_ms);
            if slot.is_some() && slot != last_slot {
                last_slot = slot;
                filled += 1;
            }
        }
        filled
    }

    /// Settles the customer's meters that sort before `before` (all of them
    /// for `None`) and sent no reading: those the registry expects, and
    /// those with edits. Called between meters, when no meter's readings are
    /// being collected.
    fn settle_meters_without_readings(&mut self, before: Option<u64>) {
        loop {
            let edited = self.customer_edits.get(self.next_edit).map(|edit| edit.meter_id);
            let expected = (self.next_expected < self.customer_meters.end).then(|| self.expectations.meter(self.next_expected).meter_id);
            let Some(meter_id) = edited.into_iter().chain(expected).min() else { return };
            if before.is_some_and(|before| meter_id >= before) {
                return;
            }
            let expected_at = self.take_expected(meter_id);
            self.meter = Some(MeterTally { meter_id, expected_at, last_slot: None, received: 0, last_reading_ms: None });
            self.close_meter();
        }
    }

    /// Applies the meter's edits to its day's readings, flags what the
    /// validation rules find suspect (outside the plausible bounds of its
    /// installation among them), estimates the intervals it missed when
    /// the registry expects it (`expected_at`) and it `received` fewer
    /// intervals than expected, and adds the readings and estimates to the
    /// customer's hours. Returns how many it estimated.
    fn settle_meter(&mut self, meter_id: u64, expected_at: Option<usize>, received: u64) -> u64 {
        let Some((customer_id, region)) = self.customer else { return 0 };
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
        let expected = expected_at.map(|at| self.expectations.meter(at));
        let plausible = expected.map_or(ValueRange::ANY, |meter| meter.plausible);
        let before = self.day.suspect_intervals.len();
        let exempt = &self.exempt;
        self.register_spread.retain(|(ts_ms, _)| !exempt.contains(ts_ms));
        for (ts_ms, value, rule) in self.register_flags.drain(..) {
            if !exempt.contains(&ts_ms) {
                self.day.suspect_intervals.push(SuspectInterval { utility, meter_id, customer_id, region, ts_ms, value, rule });
            }
        }
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
            let hour = &mut self.hours[hour_index(self.day_start_ms, ts_ms)];
            hour.add(value);
            hour.readings += 1;
        }
        self.estimates.clear();
        let gapped = expected.filter(|meter| received < meter.expected);
        let filled = match self.register_spread.is_empty() {
            true => &self.meter_readings,
            false => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&self.meter_readings);
                self.scratch.extend_from_slice(&self.register_spread);
                self.scratch.sort_unstable_by_key(|&(ts_ms, _)| ts_ms);
                &self.scratch
            }
        };
        if let Some(meter) = gapped
            && !self.needs_profiles
            && self.estimator.estimate(meter, filled, &mut self.estimates) == Estimated::NeedsProfiles
        {
            self.needs_profiles = true;
            self.estimates.clear();
        }
        if !self.register_spread.is_empty() {
            self.estimates.extend(self.register_spread.drain(..).map(|(ts_ms, value)| (ts_ms, value, EstimationMethod::Register)));
            self.estimates.sort_unstable_by_key(|&(ts_ms, _, _)| ts_ms);
        }
        let interval_ms = gapped.map_or(0, |meter| meter.interval_ms);
        let mut run: Option<EstimatedRun> = None;
        for &(ts_ms, value, method) in &self.estimates {
            let hour = &mut self.hours[hour_index(self.day_start_ms, ts_ms)];
            hour.add(value);
            hour.estimates += 1;
            match &mut run {
                Some(run) if run.method == method && run.to_ms == ts_ms => {
                    run.to_ms += interval_ms;
                    run.intervals += 1;
                    run.total += value;
                }
                _ => {
                    let started = EstimatedRun { utility, meter_id, customer_id, region, from_ms: ts_ms, to_ms: ts_ms + interval_ms, intervals: 1, total: value, method };
                    self.day.estimated_runs.extend(run.replace(started));
                }
            }
        }
        self.day.estimated_runs.extend(run);
        let estimated = self.estimates.len() as u64;
        self.estimated += estimated;
        self.meter_readings.clear();
        estimated
    }

    fn close_customer(&mut self) {
        self.close_meter();
        self.settle_meters_without_readings(None);
        if let Some((customer_id, region)) = self.customer.take() {
            let counted = self.hours.iter().any(|hour| hour.readings + hour.estimates > 0);
            if self.needs_profiles {
                self.defer_customer(customer_id);
            } else {
                if counted {
                    let quality = Quality { intervals: self.intervals, suspect: self.suspects, edited: self.edited, estimated: self.estimated };
                    let first_utc_date_hours = local_day::hours_in_first_utc_date(&self.days.range(region));
                    self.day.add_customer(self.utility, customer_id, region, &self.hours, first_utc_date_hours, quality);
                }
                if !self.customer_edits.is_empty() {
                    self.day.edited_customers.push((self.utility, customer_id));
                }
            }
            self.hours = [NO_READINGS; MAX_DAY_HOURS];
            self.intervals = (0, 0);
            self.suspects = 0;
            self.edited = 0;
            self.estimated = 0;
            self.needs_profiles = false;
            self.customer_edits.clear();
            self.next_edit = 0;
            self.customer_meters = 0..0;
        }
    }

    /// Takes back what the customer's fold added, to fold it again once the
    /// profiles are loaded.
    fn defer_customer(&mut self, customer_id: u64) {
        let marks = self.marks;
        self.day.meter_gaps.truncate(marks.meter_gaps);
        self.day.suspect_intervals.truncate(marks.suspect_intervals);
        self.day.edited_intervals.truncate(marks.edited_intervals);
        self.day.estimated_runs.truncate(marks.estimated_runs);
        self.day.deferred.push((self.utility, customer_id));
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

/// The UTC hour of the day of an event time.
/// The hour of a local day starting at `day_start_ms` that `ts_ms` (an
/// instant of that day) falls in.
fn hour_index(day_start_ms: i64, ts_ms: i64) -> usize {
    ((ts_ms - day_start_ms) / HOUR_MS).clamp(0, MAX_DAY_HOURS as i64 - 1) as usize
}

/// A customer day's counts of intervals: expected and received, suspect, edited, estimated.
struct Quality {
    intervals: (u64, u64),
    suspect: u64,
    edited: u64,
    estimated: u64,
}

/// Collects customers' days, from any number of [`ReadingFold`]s.
#[derive(Default)]
pub struct DayFold {
    customers: Vec<CustomerDay>,
    region_hours: FxHashMap<(Utility, Region, u8), RegionHour>,
    meter_gaps: Vec<MeterGap>,
    suspect_intervals: Vec<SuspectInterval>,
    edited_intervals: Vec<EditedInterval>,
    estimated_runs: Vec<EstimatedRun>,
    /// The customers whose edits a fold applied.
    edited_customers: Vec<(Utility, u64)>,
    /// The customers whose gaps need profiles that were not loaded: folded
    /// again with them, their days are not in this fold.
    pub deferred: Vec<(Utility, u64)>,
}

impl DayFold {
    /// Adds a customer's day from its `hours`, the first `first_utc_date_hours` of them in the UTC date the day starts on.
    fn add_customer(&mut self, utility: Utility, customer_id: u64, region: Region, hours: &[HourSums], first_utc_date_hours: usize, quality: Quality) {
        let Quality {
            intervals: (expected_intervals, received_intervals),
            suspect: suspect_intervals,
            edited: edited_intervals,
            estimated: estimated_intervals,
        } = quality;
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
            first_utc_date_total: 0.0,
            first_utc_date_readings: 0,
            expected_intervals,
            received_intervals,
            suspect_intervals,
            edited_intervals,
            estimated_intervals,
        };
        for (hour, sums) in (0u8..).zip(hours).filter(|(_, sums)| sums.readings + sums.estimates > 0) {
            day.total += sums.total;
            day.min_value = day.min_value.min(sums.min_value);
            day.max_value = day.max_value.max(sums.max_value);
            day.readings += sums.readings;
            if usize::from(hour) < first_utc_date_hours {
                day.first_utc_date_total += sums.total;
                day.first_utc_date_readings += sums.readings;
            }
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
        self.estimated_runs.extend(other.estimated_runs);
        self.edited_customers.extend(other.edited_customers);
        self.deferred.extend(other.deferred);
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

    /// The customers of `utility` that no fold merged into this one folded
    /// nor deferred: none of their meters sent a reading that day, but they
    /// have edits, or are among `silent`, the customers whose expected
    /// meters no fold visited ([`Expectations::unvisited_customers`]). Ordered by customer.
    pub fn customers_without_readings(&self, edits: &crate::edits::Edits, silent: &[(Utility, u64, Region)], utility: Utility) -> Vec<(u64, Region)> {
        let folded: FxHashSet<(Utility, u64)> = self.edited_customers.iter().chain(&self.deferred).copied().collect();
        let mut customers: Vec<(u64, Region)> = edits
            .customers(utility)
            .into_iter()
            .filter(|&(customer_id, _)| !folded.contains(&(utility, customer_id)))
            .chain(silent.iter().filter(|&&(of, ..)| of == utility).map(|&(_, customer_id, region)| (customer_id, region)))
            .collect();
        customers.sort_unstable_by_key(|&(customer_id, _)| customer_id);
        customers.dedup_by_key(|&mut (customer_id, _)| customer_id);
        customers
    }

    /// The outputs, once every fold is merged.
    pub fn finish(self) -> DayOutputs {
        let mut customers = self.customers;
        customers.sort_unstable_by_key(|day| (day.utility, day.customer_id));
        let mut meter_gaps = self.meter_gaps;
        meter_gaps.sort_unstable_by_key(|gap| (gap.utility, gap.meter_id, gap.customer_id));
        let mut suspect_intervals = self.suspect_intervals;
        suspect_intervals.sort_unstable_by_key(|suspect| (suspect.utility, suspect.meter_id, suspect.customer_id, suspect.ts_ms));
        let mut edited_intervals = self.edited_intervals;
        edited_intervals.sort_unstable_by_key(|edited| (edited.utility, edited.meter_id, edited.customer_id, edited.ts_ms));
        let mut estimated_runs = self.estimated_runs;
        estimated_runs.sort_unstable_by_key(|run| (run.utility, run.meter_id, run.customer_id, run.from_ms));
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
                _ => totals.push((day.utility, UtilityTotal { total: day.total, readings: day.readings, estimated: 0.0 })),
            }
        }
        for run in &estimated_runs {
            if let Some((_, total)) = totals.iter_mut().find(|(utility, _)| *utility == run.utility) {
                total.estimated += run.total;
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
        DayOutputs { customers, region_hours, top_customers, totals, meter_gaps, suspect_intervals, edited_intervals, estimated_runs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    /// 1970-01-21 00:00 in California (PST): the start of the tests' local day.
    const DAY: i64 = 20 * 86_400_000 + 8 * HOUR;

    fn key(customer_id: u64, meter_id: u64, hour: i64, log_offset: u64) -> ReadingKey {
        ReadingKey { customer_id, meter_id, ts_ms: DAY + hour * HOUR, log_offset }
    }

    #[test]
    fn folds_days_peaks_regions_and_tops_keeping_first_copies() {
        let region = Region::from_code("US-CA").expect("a region");
        let mut fold = ReadingFold::new(Utility::Water, DayInputs::new(auth_master::date_of(DAY)), ValidationSpec::default());
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
        let outputs = fold.finish().finish();
        let seven = outputs.customers[0];
        assert_eq!((seven.customer_id, seven.total, seven.readings, seven.peak_hour, seven.peak_hour_total), (7, 7.0, 4, 2, 3.0));
        assert_eq!((seven.min_value, seven.max_value), (1.0, 3.0));
        let hours: Vec<_> = outputs.region_hours.iter().map(|h| (h.hour, h.total, h.readings, h.customers)).collect();
        assert_eq!(hours, vec![(2, 3.0, 2, 1), (5, 3.0, 1, 1), (9, 11.0, 2, 2)]);
        assert_eq!(outputs.top_customers.iter().map(|t| (t.position, t.customer_id)).collect::<Vec<_>>(), vec![(1, 8), (2, 7)]);
        assert_eq!(outputs.totals, vec![(Utility::Water, UtilityTotal { total: 17.0, readings: 5, estimated: 0.0 })]);
    }

    #[test]
    fn completeness_counts_each_expected_interval_once_and_lists_gaps_and_silent_meters() {
        use auth_core::registry::Registry;
        let region = Region::from_code("US-CA").expect("a region");
        let date = auth_master::date_of(DAY);
        let installed = |meter_id, customer_id| crate::completeness::installed(meter_id, customer_id, Utility::Water, 3_600, 0, None);
        let mut registry = Registry::default();
        for (meter_id, customer_id) in [(1, 7), (2, 7), (3, 8), (4, 9)] {
            registry.set_meter(meter_id, vec![installed(meter_id, customer_id)]);
        }
        let expectations = Arc::new(crate::completeness::Expectations::of_registry(&registry, date, &[Utility::Water], i64::MAX));
        let mut fold = ReadingFold::new(Utility::Water, DayInputs { expectations: Arc::clone(&expectations), ..DayInputs::new(auth_master::date_of(DAY)) }, ValidationSpec::default());
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
        let mut day = fold.finish();
        let silent = day.customers_without_readings(&crate::edits::Edits::default(), &expectations.unvisited_customers(), Utility::Water);
        assert_eq!(silent, vec![(9, region)], "customer 9 sent nothing");
        let mut without_readings = ReadingFold::new(Utility::Water, DayInputs { expectations: Arc::clone(&expectations), ..DayInputs::new(auth_master::date_of(DAY)) }, ValidationSpec::default());
        for (customer_id, region) in silent {
            without_readings.push_customer_without_readings(customer_id, region);
        }
        day.merge(without_readings.finish());
        let outputs = day.finish();
        let intervals: Vec<_> =
            outputs.customers.iter().map(|c| (c.customer_id, c.expected_intervals, c.received_intervals, c.completeness())).collect();
        assert_eq!(intervals, vec![(7, 48, 24, Some(0.5)), (8, 24, 2, Some(2.0 / 24.0)), (10, 0, 0, None)]);
        let gaps: Vec<_> = outputs
            .meter_gaps
            .iter()
            .map(|g| (g.meter_id, g.customer_id, g.expected_intervals, g.missing_intervals(), g.last_reading_ms))
            .collect();
        let at = |hour: i64, minutes: i64| Some(DAY + hour * HOUR + minutes * 60_000);
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
        let inputs = DayInputs { edits: Arc::new(edits), ..DayInputs::new(auth_master::date_of(DAY)) };
        let rules = ValidationSpec { spike_factor: 0.0, frozen_readings: 3 };
        let mut fold = ReadingFold::new(Utility::Gas, inputs.clone(), rules);
        for hour in [2, 3, 4, 5, 6] {
            fold.push(key(7, 2, hour, hour as u64), region, 1.0).expect("in order");
        }
        let mut day = fold.finish();
        let unapplied = day.customers_without_readings(&inputs.edits, &[], Utility::Gas);
        assert_eq!(unapplied, vec![(9, region)], "customer 9 sent nothing");
        let mut edits_only = ReadingFold::new(Utility::Gas, inputs.clone(), rules);
        for (customer_id, region) in unapplied {
            edits_only.push_customer_without_readings(customer_id, region);
        }
        day.merge(edits_only.finish());
        let outputs = day.finish();

        let seven = outputs.customers[0];
        assert_eq!((seven.customer_id, seven.total, seven.readings), (7, 4.0 + 1.0 + 5.0 + 1.0 + 1.0 + 1.0 + 2.0, 7));
        assert_eq!((seven.edited_intervals, seven.suspect_intervals), (3, 2), "the approved hour 4 is not suspect");
        let nine = outputs.customers[1];
        assert_eq!((nine.customer_id, nine.total, nine.readings, nine.edited_intervals), (9, 1.5, 1, 1));
        let flagged: Vec<i64> = outputs.suspect_intervals.iter().map(|suspect| (suspect.ts_ms - DAY) / HOUR).collect();
        assert_eq!(flagged, vec![5, 6], "hours 4 to 6 read 1.0 in a row once 3 is edited; 4 is approved");
        let edited: Vec<_> = outputs.edited_intervals.iter().map(|e| (e.meter_id, (e.ts_ms - DAY) / HOUR, e.read_value, e.value)).collect();
        assert_eq!(edited, vec![(1, 1, None, 4.0), (2, 3, Some(1.0), 5.0), (2, 8, None, 2.0), (3, 0, None, 1.5)]);
    }

    #[test]
    fn a_customer_whose_gap_needs_profiles_is_deferred_then_folded_alone_with_them() {
        use crate::estimate::{Estimator, Profiles};
        use auth_core::registry::Registry;
        use auth_core::spec::EstimationSpec;
        let region = Region::from_code("US-CA").expect("a region");
        let date = auth_master::date_of(DAY);
        let mut registry = Registry::default();
        for (meter_id, customer_id) in [(1, 7), (2, 8)] {
            registry.set_meter(meter_id, vec![crate::completeness::installed(meter_id, customer_id, Utility::Water, 3_600, 0, None)]);
        }
        let expectations = Arc::new(Expectations::of_registry(&registry, date, &[Utility::Water], i64::MAX));
        let edits = crate::edits::Edits::new([IntervalEdit {
            utility: Utility::Water,
            meter_id: 2,
            ts_ms: key(8, 2, 1, 0).ts_ms,
            customer_id: 8,
            region,
            value: Some(9.0),
        }]);
        let inputs = DayInputs { expectations: Arc::clone(&expectations), edits: Arc::new(edits), ..DayInputs::new(date) };
        let estimator = Estimator::new(EstimationSpec { interpolate_up_to_secs: 7_200, profile_weeks: 1 });
        // Customer 7 misses hours 5 and 6 (interpolated); customer 8 sends hours 0 to 11 only.
        let push_all = |fold: &mut ReadingFold| {
            for hour in (0..24).filter(|hour| !(5..7).contains(hour)) {
                fold.push(key(7, 1, hour, hour as u64), region, 2.0).expect("in order");
            }
            for hour in 0..12 {
                fold.push(key(8, 2, hour, 100 + hour as u64), region, 1.0).expect("in order");
            }
        };
        let mut first = ReadingFold::new(Utility::Water, inputs.clone(), ValidationSpec::default()).with_estimator(estimator.clone());
        push_all(&mut first);
        let mut day = first.finish();
        assert_eq!(day.deferred, vec![(Utility::Water, 8)]);
        assert_eq!(day.customers.iter().map(|c| (c.customer_id, c.total, c.estimated_intervals)).collect::<Vec<_>>(), vec![(7, 48.0, 2)]);
        assert!(day.edited_intervals.is_empty() && day.meter_gaps.len() == 1, "customer 8's edit and gap are taken back");
        day.deferred.clear();

        let mut profiles = Profiles::default();
        profiles.add_week(Utility::Water, (12..24).map(|hour| ((8, 2, hour * HOUR), 0.5)));
        let again = estimator.with_profiles(Arc::new(profiles));
        let mut second = ReadingFold::new(Utility::Water, inputs, ValidationSpec::default()).with_estimator(again).only(Arc::new(FxHashSet::from_iter([8])));
        push_all(&mut second);
        day.merge(second.finish());
        let outputs = day.finish();
        let customers: Vec<_> = outputs.customers.iter().map(|c| (c.customer_id, c.total, c.readings, c.edited_intervals, c.estimated_intervals)).collect();
        assert_eq!(customers, vec![(7, 48.0, 22, 0, 2), (8, 9.0 + 11.0 + 12.0 * 0.5, 12, 1, 12)]);
        let gaps: Vec<_> = outputs.meter_gaps.iter().map(|g| (g.meter_id, g.missing_intervals(), g.estimated_intervals)).collect();
        assert_eq!(gaps, vec![(1, 2, 2), (2, 12, 12)]);
        let runs: Vec<_> = outputs.estimated_runs.iter().map(|r| (r.meter_id, (r.from_ms - DAY) / HOUR, r.intervals, r.total, r.method)).collect();
        assert_eq!(runs, vec![(1, 5, 2, 4.0, EstimationMethod::Interpolated), (2, 12, 12, 6.0, EstimationMethod::Profile)]);
        assert_eq!(outputs.edited_intervals.len(), 1);
    }

    #[test]
    fn readings_out_of_order_are_refused() {
        let region = Region::from_code("US-CA").expect("a region");
        let mut fold = ReadingFold::new(Utility::Gas, DayInputs::new(auth_master::date_of(DAY)), ValidationSpec::default());
        fold.push(key(7, 1, 5, 3), region, 1.0).expect("first");
        let err = fold.push(key(7, 1, 2, 4), region, 1.0).expect_err("an earlier event time of the same meter");
        assert_eq!(err.after, key(7, 1, 2, 4));
    }

    #[test]
    fn folds_merge_customers_and_region_hours() {
        let region = Region::from_code("US-TX").expect("a region");
        let mut first = ReadingFold::new(Utility::Gas, DayInputs::new(auth_master::date_of(DAY)), ValidationSpec::default());
        first.push(key(1, 1, 3, 0), region, 2.0).expect("in order");
        let mut second = ReadingFold::new(Utility::Gas, DayInputs::new(auth_master::date_of(DAY)), ValidationSpec::default());
        second.push(key(2, 2, 3, 0), region, 5.0).expect("in order");
        let mut day = first.finish();
        day.merge(second.finish());
        let outputs = day.finish();
        assert_eq!(outputs.customers.iter().map(|c| c.customer_id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(outputs.region_hours.iter().map(|h| (h.total, h.customers)).collect::<Vec<_>>(), vec![(7.0, 2)]);
    }
}
