//! The meter registry: a utility's installations, which say for every meter
//! whose it is, where, and how to read its values.
//!
//! A reading names only its meter; the registry says the rest. An
//! [`Installation`] holds one meter for one period of validity
//! (`[valid_from_ms, valid_to_ms)`): a meter exchange ends the old meter's
//! period and starts the new one's, a move-out ends a period and a move-in
//! starts the next. A meter's periods never overlap.
//!
//! The registry is kept in the results database (`auth registry import`,
//! the API) and shared with the gateways as the compacted log topic
//! `<pipeline>.registry`: one record per meter, keyed by the meter id in
//! decimal, holding every installation of that meter as JSON (an empty
//! list: the meter was removed). See [`RegistryRecord`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::reading::{CustomerKind, InvalidReason, Utility};
use crate::region::Region;

/// How a meter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterKind {
    /// Each reading is the consumption of one interval.
    Interval,
    /// Each reading is the meter's register (its running total).
    Cumulative,
}

impl RegisterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterKind::Interval => "interval",
            RegisterKind::Cumulative => "cumulative",
        }
    }
}

impl FromStr for RegisterKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "interval" => Ok(RegisterKind::Interval),
            "cumulative" => Ok(RegisterKind::Cumulative),
            other => Err(format!("unknown register kind `{other}` (expected interval or cumulative)")),
        }
    }
}

/// The unit a meter's values are in. AUTH keeps electricity in Wh and gas and
/// water in litres; [`MeterUnit::factor`] converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MeterUnit {
    Wh,
    #[serde(rename = "kWh")]
    KWh,
    #[serde(rename = "MWh")]
    MWh,
    L,
    #[serde(rename = "m3")]
    CubicMetre,
}

impl MeterUnit {
    pub const ALL: [MeterUnit; 5] = [MeterUnit::Wh, MeterUnit::KWh, MeterUnit::MWh, MeterUnit::L, MeterUnit::CubicMetre];

    pub fn as_str(self) -> &'static str {
        match self {
            MeterUnit::Wh => "Wh",
            MeterUnit::KWh => "kWh",
            MeterUnit::MWh => "MWh",
            MeterUnit::L => "L",
            MeterUnit::CubicMetre => "m3",
        }
    }

    /// How many of the utility's unit ([`Utility::unit`]) one of this unit is.
    pub fn factor(self) -> f64 {
        match self {
            MeterUnit::Wh | MeterUnit::L => 1.0,
            MeterUnit::KWh | MeterUnit::CubicMetre => 1_000.0,
            MeterUnit::MWh => 1_000_000.0,
        }
    }

    /// Whether a meter of `utility` may count in this unit.
    pub fn measures(self, utility: Utility) -> bool {
        match self {
            MeterUnit::Wh | MeterUnit::KWh | MeterUnit::MWh => utility == Utility::Electricity,
            MeterUnit::L | MeterUnit::CubicMetre => utility != Utility::Electricity,
        }
    }

    /// The unit a utility's meters count in when the registry does not say.
    pub fn of(utility: Utility) -> MeterUnit {
        match utility {
            Utility::Electricity => MeterUnit::Wh,
            Utility::Gas | Utility::Water => MeterUnit::L,
        }
    }
}

impl FromStr for MeterUnit {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|unit| unit.as_str() == name)
            .ok_or_else(|| format!("unknown unit `{name}` (expected Wh, kWh or MWh for electricity, L or m3 for gas and water)"))
    }
}

/// One meter installed at one premise for one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Installation {
    pub meter_id: u64,
    pub customer_id: u64,
    /// The utility's name for the place (service point, premise number).
    pub premise_id: String,
    pub region: Region,
    pub utility: Utility,
    pub customer_kind: CustomerKind,
    /// The unit of the meter's values.
    pub unit: MeterUnit,
    /// What the meter's values are multiplied by (a current transformer's
    /// ratio, a pulse weight), before converting the unit.
    pub multiplier: f64,
    pub register: RegisterKind,
    /// How often the meter reads, in seconds.
    pub interval_secs: u32,
    /// UTC ms from which the installation is valid.
    pub valid_from_ms: i64,
    /// UTC ms up to which (exclusive) it is valid; `None`: still installed.
    pub valid_to_ms: Option<i64>,
    /// The least and the most one interval may plausibly read, in `unit`
    /// (after the multiplier); `None`: no bound. The batch flags a reading
    /// outside them `suspect` (rule `range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plausible_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plausible_max: Option<f64>,
    /// A cumulative meter's register wraps to 0 on reaching this value, in
    /// `unit` before the multiplier (100000 for five kWh dials); `None`:
    /// it does not wrap, and every fall of the register is a reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_rollover: Option<f64>,
}

/// Bounds of a value, each optional.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ValueRange {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl ValueRange {
    /// No bound at all.
    pub const ANY: ValueRange = ValueRange { min: None, max: None };

    pub fn contains(&self, value: f64) -> bool {
        self.min.is_none_or(|min| value >= min) && self.max.is_none_or(|max| value <= max)
    }

    /// The smallest range holding both (a bound only where both have one).
    pub fn widened(self, other: ValueRange) -> ValueRange {
        let either = |a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64| a.zip(b).map(|(a, b)| pick(a, b));
        ValueRange { min: either(self.min, other.min, f64::min), max: either(self.max, other.max, f64::max) }
    }
}

/// The longest a premise id may be.
pub const MAX_PREMISE_ID_CHARS: usize = 64;

impl Installation {
    /// What one of the meter's values is in the utility's unit.
    pub fn scale(&self) -> f64 {
        self.multiplier * self.unit.factor()
    }

    /// The plausible bounds of one interval in the utility's unit, as the
    /// master data holds the meter's values.
    pub fn plausible_range(&self) -> ValueRange {
        let factor = self.unit.factor();
        ValueRange { min: self.plausible_min.map(|min| min * factor), max: self.plausible_max.map(|max| max * factor) }
    }

    /// Where a cumulative meter's register wraps, in the utility's unit as
    /// the master data holds its registers; `None` for an interval meter
    /// or a register that does not wrap.
    pub fn rollover(&self) -> Option<f64> {
        self.register_rollover.filter(|_| self.register == RegisterKind::Cumulative).map(|rollover| rollover * self.scale())
    }

    /// Whether it is valid at `ts_ms`.
    pub fn covers(&self, ts_ms: i64) -> bool {
        ts_ms >= self.valid_from_ms && self.valid_to_ms.is_none_or(|to| ts_ms < to)
    }

    fn overlaps(&self, other: &Installation) -> bool {
        let ends_after = |installation: &Installation, start: i64| installation.valid_to_ms.is_none_or(|to| to > start);
        ends_after(self, other.valid_from_ms) && ends_after(other, self.valid_from_ms)
    }

    /// Every rule one installation can break on its own.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.unit.measures(self.utility) {
            problems.push(format!("unit {} does not measure {}", self.unit.as_str(), self.utility));
        }
        if !(self.multiplier.is_finite() && self.multiplier > 0.0 && self.multiplier <= 1e6) {
            problems.push(format!("multiplier {} must be a positive number of at most 1e6", self.multiplier));
        }
        if self.interval_secs == 0 || 86_400 % self.interval_secs != 0 {
            problems.push(format!("interval {} s must divide a day (86400 s) into whole intervals", self.interval_secs));
        }
        if self.premise_id.is_empty() || self.premise_id.chars().count() > MAX_PREMISE_ID_CHARS {
            problems.push(format!("premise id must be 1 to {MAX_PREMISE_ID_CHARS} characters"));
        }
        for (column, bound) in [("plausible min", self.plausible_min), ("plausible max", self.plausible_max)] {
            if let Some(bound) = bound
                && !(bound.is_finite() && bound >= 0.0)
            {
                problems.push(format!("{column} {bound} must be a number of at least 0"));
            }
        }
        if let (Some(min), Some(max)) = (self.plausible_min, self.plausible_max)
            && min > max
        {
            problems.push(format!("plausible min {min} is above plausible max {max}"));
        }
        match self.register_rollover {
            Some(_) if self.register != RegisterKind::Cumulative => {
                problems.push("register rollover is for cumulative meters only".into());
            }
            Some(rollover) if !(rollover.is_finite() && rollover > 0.0) => {
                problems.push(format!("register rollover {rollover} must be a positive number"));
            }
            _ => {}
        }
        if let Some(to) = self.valid_to_ms
            && to <= self.valid_from_ms
        {
            problems.push(format!("valid to ({to}) must be after valid from ({})", self.valid_from_ms));
        }
        problems
    }
}

/// An installation file's line that cannot be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRow {
    /// The line of the file (1 is the header of a CSV file; Parquet rows count from 1).
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Every installation of every meter, by meter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    meters: HashMap<u64, Vec<Installation>>,
}

impl Registry {
    /// Checks rows read from a file (each with its line, or why it could not
    /// be read) and builds the registry of them, or reports every bad line:
    /// a row breaking a rule of [`Installation::problems`], and a row whose
    /// period overlaps an earlier row's of the same meter.
    pub fn from_rows(rows: Vec<(usize, Result<Installation, String>)>) -> Result<Registry, Vec<BadRow>> {
        let mut bad = Vec::new();
        let mut meters: HashMap<u64, Vec<(usize, Installation)>> = HashMap::new();
        for (line, row) in rows {
            let installation = match row {
                Ok(installation) => installation,
                Err(reason) => {
                    bad.push(BadRow { line, reason });
                    continue;
                }
            };
            let problems = installation.problems();
            if !problems.is_empty() {
                bad.push(BadRow { line, reason: problems.join("; ") });
                continue;
            }
            let periods = meters.entry(installation.meter_id).or_default();
            if let Some((earlier, _)) = periods.iter().find(|(_, other)| other.overlaps(&installation)) {
                bad.push(BadRow {
                    line,
                    reason: format!(
                        "meter {} is already installed for part of this period (line {earlier}); a meter's periods may not overlap",
                        installation.meter_id
                    ),
                });
                continue;
            }
            periods.push((line, installation));
        }
        if !bad.is_empty() {
            bad.sort_by_key(|row| row.line);
            return Err(bad);
        }
        let mut registry = Registry::default();
        for (meter_id, periods) in meters {
            registry.set_meter(meter_id, periods.into_iter().map(|(_, installation)| installation).collect());
        }
        Ok(registry)
    }

    /// Replaces every installation of a meter (none: the meter is removed).
    pub fn set_meter(&mut self, meter_id: u64, mut installations: Vec<Installation>) {
        if installations.is_empty() {
            self.meters.remove(&meter_id);
        } else {
            installations.sort_by_key(|installation| installation.valid_from_ms);
            self.meters.insert(meter_id, installations);
        }
    }

    /// The installation of `meter_id` valid at `ts_ms`.
    pub fn find(&self, meter_id: u64, ts_ms: i64) -> Result<&Installation, InvalidReason> {
        let periods = self.meters.get(&meter_id).ok_or(InvalidReason::UnknownMeter { meter_id })?;
        periods.iter().find(|installation| installation.covers(ts_ms)).ok_or_else(|| InvalidReason::NotInstalled {
            meter_id,
            ts_ms,
            periods: periods
                .iter()
                .map(|installation| match installation.valid_to_ms {
                    Some(to) => format!("{}..{to}", installation.valid_from_ms),
                    None => format!("{}..", installation.valid_from_ms),
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Every installation of a meter, oldest first.
    pub fn meter(&self, meter_id: u64) -> &[Installation] {
        self.meters.get(&meter_id).map_or(&[], Vec::as_slice)
    }

    /// Every installation, by meter id and then period.
    pub fn installations(&self) -> Vec<&Installation> {
        let mut all: Vec<&Installation> = self.meters.values().flatten().collect();
        all.sort_by_key(|installation| (installation.meter_id, installation.valid_from_ms));
        all
    }

    pub fn meters(&self) -> impl Iterator<Item = u64> + '_ {
        self.meters.keys().copied()
    }

    pub fn meter_count(&self) -> usize {
        self.meters.len()
    }
}

/// One record of the `<pipeline>.registry` topic: a meter and all its installations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryRecord {
    pub meter_id: u64,
    /// Empty: the meter was removed from the registry.
    pub installations: Vec<Installation>,
}

impl RegistryRecord {
    /// The record's key: the meter id in decimal.
    pub fn key(&self) -> Vec<u8> {
        self.meter_id.to_string().into_bytes()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("a registry record always serialises"))
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn installation(meter_id: u64, customer_id: u64, from: i64, to: Option<i64>) -> Installation {
        Installation {
            meter_id,
            customer_id,
            premise_id: format!("P-{customer_id}"),
            region: Region::from_code("US-CA").expect("region"),
            utility: Utility::Electricity,
            customer_kind: CustomerKind::Residential,
            unit: MeterUnit::KWh,
            multiplier: 1.0,
            register: RegisterKind::Interval,
            interval_secs: 900,
            valid_from_ms: from,
            valid_to_ms: to,
            plausible_min: None,
            plausible_max: None,
            register_rollover: None,
        }
    }

    #[test]
    fn a_meter_exchange_and_a_move_are_found_by_event_time() {
        let rows = vec![
            (2, Ok(installation(7, 1, 0, Some(1_000)))),
            (3, Ok(installation(7, 2, 1_000, None))),
            (4, Ok(installation(8, 3, 500, Some(900)))),
        ];
        let registry = Registry::from_rows(rows).expect("valid");
        assert_eq!(registry.find(7, 999).expect("installed").customer_id, 1);
        assert_eq!(registry.find(7, 1_000).expect("installed").customer_id, 2);
        assert_eq!(registry.find(9, 0), Err(InvalidReason::UnknownMeter { meter_id: 9 }));
        let outside = registry.find(8, 900).expect_err("moved out").to_string();
        assert!(outside.contains("not installed at event time 900") && outside.contains("500..900"), "{outside}");
        assert_eq!(registry.find(7, 5).expect("installed").scale(), 1_000.0);
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let mut wrong_unit = installation(10, 1, 0, None);
        wrong_unit.unit = MeterUnit::CubicMetre;
        let mut backwards = installation(11, 1, 100, Some(50));
        backwards.interval_secs = 7;
        let rows = vec![
            (2, Ok(installation(7, 1, 0, Some(1_000)))),
            (3, Ok(installation(7, 2, 500, None))),
            (4, Err("region: unknown region `XX-YY`".to_owned())),
            (5, Ok(wrong_unit)),
            (6, Ok(backwards)),
            (7, Ok(installation(7, 1, 0, Some(1_000)))),
        ];
        let bad = Registry::from_rows(rows).expect_err("bad rows");
        let lines: Vec<usize> = bad.iter().map(|row| row.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7], "{bad:?}");
        assert!(bad[0].reason.contains("line 2"), "{}", bad[0]);
        assert!(bad[2].reason.contains("unit m3 does not measure electricity"), "{}", bad[2]);
        assert!(bad[3].reason.contains("interval 7 s") && bad[3].reason.contains("valid to (50)"), "{}", bad[3]);
    }

    #[test]
    fn plausible_bounds_are_checked_scaled_and_widened() {
        let mut kwh = installation(7, 1, 0, None);
        kwh.unit = MeterUnit::KWh;
        kwh.plausible_max = Some(5.0);
        assert!(kwh.problems().is_empty());
        assert_eq!(kwh.plausible_range(), ValueRange { min: None, max: Some(5_000.0) }, "in Wh, as the master data holds values");
        kwh.plausible_min = Some(6.0);
        assert_eq!(kwh.problems(), vec!["plausible min 6 is above plausible max 5".to_owned()]);
        kwh.plausible_min = Some(f64::NAN);
        assert!(kwh.problems()[0].contains("plausible min NaN must be a number of at least 0"), "{:?}", kwh.problems());
        let narrow = ValueRange { min: Some(1.0), max: Some(5.0) };
        assert_eq!(narrow.widened(ValueRange { min: Some(0.5), max: None }), ValueRange { min: Some(0.5), max: None });
        assert!(narrow.contains(1.0) && narrow.contains(5.0) && !narrow.contains(5.1) && ValueRange::ANY.contains(1e300));
    }

    #[test]
    fn a_registry_record_round_trips() {
        let record = RegistryRecord { meter_id: 7, installations: vec![installation(7, 1, 0, None)] };
        assert_eq!(record.key(), b"7");
        assert_eq!(RegistryRecord::from_json(&record.to_json()).expect("parses"), record);
    }
}
