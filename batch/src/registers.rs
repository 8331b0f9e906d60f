//! Cumulative meters: their registers turned into interval consumption.
//!
//! A meter the registry says is `cumulative` reports its register (its
//! running total). Each register, less the meter's register before it in
//! the same installation, is the consumption since then:
//!
//! - spread evenly over the intervals since that register: the reading's
//!   own interval counts its share as read, and each interval the meter
//!   missed in between its share as estimated (method `register`), exactly
//!   the register's advance over the gap;
//! - a register below the one before is a rollover when the installation
//!   has a `register_rollover` and the wrapped advance is plausible (below
//!   half the rollover, and within the installation's plausible maximum per
//!   interval): the interval counts it and is flagged `rollover`. Otherwise
//!   it is a reset: the interval counts nothing read, is flagged `reset`
//!   and estimated, and the meter counts on from the new register;
//! - a register with none before it in its installation (a new or
//!   exchanged meter, or one whose previous day the master data lacks) is
//!   flagged `registerStart`: it counts 0 when read at the installation's
//!   start (an install read: the meter counted nothing before), and
//!   otherwise its interval is missing and estimated.
//!
//! The register before a day's first is the meter's last of the previous
//! day, read from the master data by the job. Part of a gap's advance that
//! falls before the day is not counted in it.

use rustc_hash::FxHashMap;

use crate::completeness::ExpectedMeter;
use crate::fold::SuspectRule;

/// The last register of each cumulative meter (customer, meter) on the
/// day before: its event time and value.
pub type PreviousRegisters = FxHashMap<(u64, u64), (i64, f64)>;

/// Rewrites `readings` (a meter's day in event time order, registers in its
/// cumulative installations) as consumption; appends the intervals the
/// registers' advances fill to `spread` and the flagged intervals (event
/// time, value, rule) to `flags`. A flag's value is what the interval
/// counts, or for `reset` and `registerStart` the register read.
pub(crate) fn to_consumption(
    meter: &ExpectedMeter,
    previous: Option<(i64, f64)>,
    readings: &mut Vec<(i64, f64)>,
    scratch: &mut Vec<(i64, f64)>,
    spread: &mut Vec<(i64, f64)>,
    flags: &mut Vec<(i64, f64, SuspectRule)>,
) {
    scratch.clear();
    std::mem::swap(readings, scratch);
    let mut newest = previous;
    for &(ts_ms, register) in scratch.iter() {
        let Some(period) = meter.registers.iter().find(|period| period.covers(ts_ms)) else {
            readings.push((ts_ms, register));
            continue;
        };
        let earlier = newest.filter(|&(at_ms, _)| period.covers(at_ms) && at_ms < ts_ms);
        newest = Some((ts_ms, register));
        let Some((at_ms, before)) = earlier else {
            flags.push((ts_ms, register, SuspectRule::RegisterStart));
            if ts_ms == period.valid_from_ms {
                readings.push((ts_ms, 0.0));
            }
            continue;
        };
        let (first_slot, slot) = (meter.slot_index(at_ms), meter.slot_index(ts_ms));
        let intervals = (slot - first_slot).max(1);
        let advance = register - before;
        let consumption = if advance >= 0.0 {
            advance
        } else {
            let wrapped = period.rollover.map(|rollover| (rollover - before + register, rollover));
            match wrapped {
                Some((wrapped, rollover))
                    if wrapped < rollover / 2.0 && meter.plausible.max.is_none_or(|max| wrapped <= max * intervals as f64) =>
                {
                    flags.push((ts_ms, wrapped / intervals as f64, SuspectRule::Rollover));
                    wrapped
                }
                _ => {
                    flags.push((ts_ms, register, SuspectRule::Reset));
                    continue;
                }
            }
        };
        let share = consumption / intervals as f64;
        for missed in first_slot + 1..slot {
            let slot_ms = meter.slot_start_ms(missed);
            if meter.slot_of(slot_ms).is_some() {
                spread.push((slot_ms, share));
            }
        }
        readings.push((ts_ms, share));
    }
}

#[cfg(test)]
mod tests {
    use auth_core::registry::{RegisterKind, Registry};
    use auth_core::Utility;
    use chrono::NaiveDate;

    use super::*;
    use crate::completeness::{Expectations, installed};

    const QUARTER: i64 = 900_000;

    fn meter(rollover: Option<f64>, plausible_max: Option<f64>, from_ms: i64) -> ExpectedMeter {
        let date = NaiveDate::from_ymd_opt(2026, 3, 4).expect("a date");
        let installation = auth_core::registry::Installation {
            register: RegisterKind::Cumulative,
            register_rollover: rollover,
            plausible_max,
            ..installed(7, 1, Utility::Water, 900, from_ms, None)
        };
        let registry = Registry::from_rows(vec![(1, Ok(installation))]).expect("a valid registry");
        let expectations = Expectations::of_registry(&registry, date, &[Utility::Water], i64::MAX);
        expectations.meter(0).clone()
    }

    /// The readings, the spread and the flags of [`to_consumption`].
    type Converted = (Vec<(i64, f64)>, Vec<(i64, f64)>, Vec<(i64, f64, SuspectRule)>);

    fn converted(meter: &ExpectedMeter, previous: Option<(i64, f64)>, registers: &[(i64, f64)]) -> Converted {
        let (mut readings, mut spread, mut flags) = (registers.to_vec(), Vec::new(), Vec::new());
        to_consumption(meter, previous, &mut readings, &mut Vec::new(), &mut spread, &mut flags);
        (readings, spread, flags)
    }

    fn day_start() -> i64 {
        let california = auth_core::Region::from_code("US-CA").expect("California");
        auth_core::local_day::day_start_ms(california, NaiveDate::from_ymd_opt(2026, 3, 4).expect("a date"))
    }

    #[test]
    fn advances_count_and_gaps_share_the_advance_exactly() {
        let start = day_start();
        let meter = meter(None, None, start - 10 * auth_master::DAY_MS);
        let (readings, spread, flags) =
            converted(&meter, Some((start - QUARTER, 100.0)), &[(start, 101.0), (start + QUARTER, 101.5), (start + 4 * QUARTER, 104.5)]);
        assert_eq!(readings, vec![(start, 1.0), (start + QUARTER, 0.5), (start + 4 * QUARTER, 1.0)]);
        assert_eq!(spread, vec![(start + 2 * QUARTER, 1.0), (start + 3 * QUARTER, 1.0)], "the gap's two intervals share the advance");
        assert!(flags.is_empty());
    }

    #[test]
    fn a_fall_is_a_rollover_when_the_register_wraps_plausibly_and_a_reset_otherwise() {
        let start = day_start();
        let wrapping = meter(Some(100_000.0), Some(50.0), start - auth_master::DAY_MS);
        let (readings, _, flags) = converted(&wrapping, Some((start, 99_990.0)), &[(start + QUARTER, 5.0), (start + 2 * QUARTER, 2.0)]);
        assert_eq!(readings, vec![(start + QUARTER, 15.0)]);
        assert_eq!(flags, vec![(start + QUARTER, 15.0, SuspectRule::Rollover), (start + 2 * QUARTER, 2.0, SuspectRule::Reset)]);
        let (readings, _, flags) = converted(&meter(None, None, start - auth_master::DAY_MS), Some((start, 99_990.0)), &[(start + QUARTER, 5.0), (start + 2 * QUARTER, 7.0)]);
        assert_eq!(readings, vec![(start + 2 * QUARTER, 2.0)], "a reset, then counting on from the new register");
        assert_eq!(flags, vec![(start + QUARTER, 5.0, SuspectRule::Reset)]);
        let (_, _, flags) = converted(&meter(Some(100_000.0), Some(1.0), start - auth_master::DAY_MS), Some((start, 99_990.0)), &[(start + QUARTER, 5.0)]);
        assert_eq!(flags, vec![(start + QUARTER, 5.0, SuspectRule::Reset)], "15 in one interval is above its plausible 1");
    }

    #[test]
    fn a_first_register_counts_zero_at_its_installation_and_is_missing_after() {
        let start = day_start();
        let installed_at_six = meter(None, None, start + 24 * QUARTER);
        let (readings, _, flags) = converted(&installed_at_six, Some((start - QUARTER, 9.0)), &[(start + 24 * QUARTER, 500.0), (start + 25 * QUARTER, 500.5)]);
        assert_eq!(readings, vec![(start + 24 * QUARTER, 0.0), (start + 25 * QUARTER, 0.5)], "the register of another installation is not used");
        assert_eq!(flags, vec![(start + 24 * QUARTER, 500.0, SuspectRule::RegisterStart)]);
        let (readings, _, flags) = converted(&installed_at_six, None, &[(start + 26 * QUARTER, 501.0), (start + 27 * QUARTER, 501.25)]);
        assert_eq!(readings, vec![(start + 27 * QUARTER, 0.25)]);
        assert_eq!(flags, vec![(start + 26 * QUARTER, 501.0, SuspectRule::RegisterStart)]);
    }
}
