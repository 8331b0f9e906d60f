//! Estimation of the intervals a meter missed (the E of VEE).
//!
//! Every expected slot of a meter's day ([`crate::completeness`]) that no
//! reading and no operator's edit filled is estimated, and flagged so:
//!
//! - a gap of at most `interpolateUpToSecs` between two readings of the day
//!   is filled by linear interpolation between their values;
//! - a longer gap, or one at either end of the day, takes the meter's
//!   profile: the mean, over up to `profileWeeks` previous weeks, of its
//!   consumption in the same slot of the same weekday. A slot no previous
//!   week has a reading for stays missing.
//!
//! A day computed before its end leaves each meter's last gap alone: its
//! readings may still be on their way.
//!
//! Estimates count in the day's totals but never overwrite a reading: they
//! are made anew at every run of the day from what the master data holds
//! then, so a reading that arrives later replaces its estimate, and the
//! day's restatement carries the change to the serving store.

use auth_core::spec::EstimationSpec;
use auth_core::{Region, Utility};
use rustc_hash::FxHashMap;
use std::sync::Arc;

use crate::completeness::ExpectedMeter;

/// How an interval's estimate was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EstimationMethod {
    /// Linear interpolation between the readings on either side of a short gap.
    Interpolated,
    /// The meter's mean at the same weekday and time in previous weeks.
    Profile,
    /// A cumulative meter's share of its register's advance over the gap ([`crate::registers`]).
    Register,
}

impl EstimationMethod {
    pub const ALL: [EstimationMethod; 3] = [EstimationMethod::Interpolated, EstimationMethod::Profile, EstimationMethod::Register];

    pub fn as_str(self) -> &'static str {
        match self {
            EstimationMethod::Interpolated => "interpolated",
            EstimationMethod::Profile => "profile",
            EstimationMethod::Register => "register",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|method| method.as_str() == text)
    }
}

/// Consecutive intervals a meter missed, estimated by one method: one row
/// however many intervals (a meter reading every 5 s that sent nothing all
/// day has 17,280).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatedRun {
    pub utility: Utility,
    pub meter_id: u64,
    pub customer_id: u64,
    pub region: Region,
    /// The start of its first interval and the end of its last, UTC ms.
    pub from_ms: i64,
    pub to_ms: i64,
    pub intervals: u64,
    /// The sum of the estimates, in the utility's unit.
    pub total: f64,
    pub method: EstimationMethod,
}

/// The meters' profiles: per customer's meter and slot of the day, the sum
/// of its consumption over the previous weeks that had any in that slot,
/// and how many weeks did.
#[derive(Debug, Default)]
pub struct Profiles {
    slots: FxHashMap<(Utility, u64, u64, i64), (f64, u32)>,
}

impl Profiles {
    /// Adds one previous week's consumption of `utility`: per customer, meter
    /// and the slot's offset from midnight in ms, the sum of its readings.
    pub fn add_week(&mut self, utility: Utility, week: impl IntoIterator<Item = ((u64, u64, i64), f64)>) {
        for ((customer_id, meter_id, offset_ms), value) in week {
            let slot = self.slots.entry((utility, customer_id, meter_id, offset_ms)).or_insert((0.0, 0));
            slot.0 += value;
            slot.1 += 1;
        }
    }

    /// The meter's mean consumption in the slot starting `offset_ms` after midnight.
    pub fn mean(&self, utility: Utility, customer_id: u64, meter_id: u64, offset_ms: i64) -> Option<f64> {
        self.slots.get(&(utility, customer_id, meter_id, offset_ms)).map(|&(sum, weeks)| sum / f64::from(weeks))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// What estimating a meter's day came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Estimated {
    /// Every gap the settings cover is estimated (the slots without a
    /// profile stay missing).
    Done,
    /// A gap needs the meter's profile and none is loaded: nothing was estimated.
    NeedsProfiles,
}

/// The estimation settings and, once loaded, the profiles of the meters whose gaps need them.
#[derive(Debug, Clone, Default)]
pub struct Estimator {
    interpolate_up_to_ms: i64,
    profile_weeks: u32,
    profiles: Option<Arc<Profiles>>,
}

impl Estimator {
    /// Estimating by `settings`, without profiles yet: a meter whose gap
    /// needs one is reported ([`Estimated::NeedsProfiles`]).
    pub fn new(settings: EstimationSpec) -> Self {
        Self { interpolate_up_to_ms: i64::from(settings.interpolate_up_to_secs) * 1_000, profile_weeks: settings.profile_weeks, profiles: None }
    }

    /// Estimating nothing.
    pub fn off() -> Self {
        Self::default()
    }

    /// The same settings with `profiles` loaded.
    pub fn with_profiles(&self, profiles: Arc<Profiles>) -> Self {
        Self { profiles: Some(profiles), ..self.clone() }
    }

    pub fn profile_weeks(&self) -> u32 {
        self.profile_weeks
    }

    /// Appends to `estimates` (event time, value, method) each expected slot
    /// of `meter` that no reading of `readings` (its day after the edits, in
    /// event time order) fills, that the settings estimate.
    pub(crate) fn estimate(
        &self,
        meter: &ExpectedMeter,
        readings: &[(i64, f64)],
        estimates: &mut Vec<(i64, f64, EstimationMethod)>,
    ) -> Estimated {
        if self.interpolate_up_to_ms == 0 && self.profile_weeks == 0 {
            return Estimated::Done;
        }
        let slot_of = |at: usize| meter.slot_index(readings[at].0);
        let mut next = 0;
        // A run of missing slots: its first and last slot, and the first reading after it.
        let mut run: Option<(i64, i64, usize)> = None;
        for slot in meter.slots() {
            while next < readings.len() && slot_of(next) < slot {
                next += 1;
            }
            if next < readings.len() && slot_of(next) == slot {
                if let Some(gap) = run.take()
                    && self.fill(meter, readings, gap, estimates) == Estimated::NeedsProfiles
                {
                    return Estimated::NeedsProfiles;
                }
                continue;
            }
            match &mut run {
                Some((_, last, _)) if *last + 1 == slot => *last = slot,
                _ => {
                    if let Some(gap) = run.replace((slot, slot, next))
                        && self.fill(meter, readings, gap, estimates) == Estimated::NeedsProfiles
                    {
                        return Estimated::NeedsProfiles;
                    }
                }
            }
        }
        match run {
            Some(_) if meter.ends_open => Estimated::Done,
            Some(gap) => self.fill(meter, readings, gap, estimates),
            None => Estimated::Done,
        }
    }

    /// Estimates the slots `first..=last`; `after` is the first reading past them.
    fn fill(
        &self,
        meter: &ExpectedMeter,
        readings: &[(i64, f64)],
        (first, last, after): (i64, i64, usize),
        estimates: &mut Vec<(i64, f64, EstimationMethod)>,
    ) -> Estimated {
        let interval_ms = meter.interval_ms;
        let gap_ms = (last - first + 1) * interval_ms;
        let before = after.checked_sub(1).map(|at| readings[at]);
        if let (Some((before_ms, before_value)), Some(&(after_ms, after_value))) = (before, readings.get(after))
            && gap_ms <= self.interpolate_up_to_ms
        {
            let (from, to) = (meter.slot_index(before_ms), meter.slot_index(after_ms));
            let step = (after_value - before_value) / (to - from) as f64;
            for slot in first..=last {
                estimates.push((meter.slot_start_ms(slot), before_value + step * (slot - from) as f64, EstimationMethod::Interpolated));
            }
            return Estimated::Done;
        }
        if self.profile_weeks == 0 {
            return Estimated::Done;
        }
        let Some(profiles) = &self.profiles else { return Estimated::NeedsProfiles };
        for slot in first..=last {
            let ts_ms = meter.slot_start_ms(slot);
            if let Some(mean) = profiles.mean(meter.utility, meter.customer_id, meter.meter_id, auth_core::local_day::time_of_day_ms(meter.region, ts_ms)) {
                estimates.push((ts_ms, mean, EstimationMethod::Profile));
            }
        }
        Estimated::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auth_master::DAY_MS;
    use crate::completeness::{Expectations, installed};
    use auth_core::registry::Registry;

    const QUARTER: i64 = 900_000;

    fn meter_of(registry: &Registry, date: chrono::NaiveDate) -> ExpectedMeter {
        let expectations = Expectations::of_registry(registry, date, &[Utility::Electricity], i64::MAX);
        expectations.meter(0).clone()
    }

    fn estimates(estimator: &Estimator, meter: &ExpectedMeter, readings: &[(i64, f64)]) -> (Estimated, Vec<(i64, f64, EstimationMethod)>) {
        let mut estimates = Vec::new();
        let outcome = estimator.estimate(meter, readings, &mut estimates);
        (outcome, estimates)
    }

    #[test]
    fn short_gaps_are_interpolated_long_ones_wait_for_profiles_then_take_them() {
        let date = auth_master::date_of(20 * DAY_MS);
        let start = auth_core::local_day::day_start_ms(Region::from_code("US-CA").expect("California"), date);
        let mut registry = Registry::default();
        registry.set_meter(1, vec![installed(1, 7, Utility::Electricity, 900, 0, None)]);
        let meter = meter_of(&registry, date);
        let at = |quarter: i64| start + quarter * QUARTER;
        // Quarters 0..96 but 10 and 11 (a half hour) and 40..=63 (six hours); quarter 9 reads 3, quarter 12 reads 6.
        let readings: Vec<(i64, f64)> = (0..96)
            .filter(|quarter| !(10..12).contains(quarter) && !(40..64).contains(quarter))
            .map(|quarter| (at(quarter), if quarter == 12 { 6.0 } else { 3.0 }))
            .collect();
        let estimator = Estimator::new(EstimationSpec { interpolate_up_to_secs: 3_600, profile_weeks: 4 });
        let (outcome, _) = estimates(&estimator, &meter, &readings);
        assert_eq!(outcome, Estimated::NeedsProfiles, "six hours are past interpolation");

        let mut profiles = Profiles::default();
        profiles.add_week(Utility::Electricity, (40..64).map(|quarter| ((7, 1, quarter * QUARTER), 2.0)));
        profiles.add_week(Utility::Electricity, (40..63).map(|quarter| ((7, 1, quarter * QUARTER), 4.0)));
        let (outcome, filled) = estimates(&estimator.with_profiles(Arc::new(profiles)), &meter, &readings);
        assert_eq!(outcome, Estimated::Done);
        assert_eq!(filled[..2], [(at(10), 4.0, EstimationMethod::Interpolated), (at(11), 5.0, EstimationMethod::Interpolated)]);
        assert_eq!(filled.len(), 2 + 24);
        assert_eq!(filled[2], (at(40), 3.0, EstimationMethod::Profile), "the mean of two weeks");
        assert_eq!(filled[25], (at(63), 2.0, EstimationMethod::Profile), "one week had that quarter");

        let only_interpolation = Estimator::new(EstimationSpec { interpolate_up_to_secs: 1_800, profile_weeks: 0 });
        let (outcome, filled) = estimates(&only_interpolation, &meter, &readings);
        assert_eq!((outcome, filled.len()), (Estimated::Done, 2), "the six hours stay missing without profiles");
        let (_, filled) = estimates(&Estimator::new(EstimationSpec { interpolate_up_to_secs: 900, profile_weeks: 0 }), &meter, &readings);
        assert!(filled.is_empty(), "half an hour is past 15 minutes");
    }

    #[test]
    fn gaps_at_either_end_of_the_day_and_silent_meters_take_the_profile() {
        let date = auth_master::date_of(20 * DAY_MS);
        let start = auth_core::local_day::day_start_ms(Region::from_code("US-CA").expect("California"), date);
        let mut registry = Registry::default();
        registry.set_meter(1, vec![installed(1, 7, Utility::Electricity, 900, 0, None)]);
        let meter = meter_of(&registry, date);
        let mut profiles = Profiles::default();
        profiles.add_week(Utility::Electricity, (0..96).map(|quarter| ((7, 1, quarter * QUARTER), 1.0)));
        let estimator = Estimator::new(EstimationSpec::default()).with_profiles(Arc::new(profiles));
        let readings: Vec<(i64, f64)> = (1..95).map(|quarter| (start + quarter * QUARTER, 3.0)).collect();
        let (_, filled) = estimates(&estimator, &meter, &readings);
        assert_eq!(filled, vec![(start, 1.0, EstimationMethod::Profile), (start + 95 * QUARTER, 1.0, EstimationMethod::Profile)]);
        let (_, silent) = estimates(&estimator, &meter, &[]);
        assert_eq!(silent.len(), 96);
        assert!(estimates(&Estimator::off(), &meter, &[]).1.is_empty());
    }
}
