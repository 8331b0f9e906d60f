//! The reading: one interval's consumption from one meter, and its validation.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::region::Region;

/// The earliest event time a reading may have: 2000-01-01T00:00:00Z.
pub const EARLIEST_EVENT_MS: i64 = 946_684_800_000;
/// The latest event time a reading may have: 2200-01-01T00:00:00Z. Together
/// with [`EARLIEST_EVENT_MS`] it keeps window arithmetic far from `i64`'s limits.
pub const LATEST_EVENT_MS: i64 = 7_258_118_400_000;

/// The clock a receiver (gateway or stream processor) checks event times
/// against, and how far ahead of it a meter's clock may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverClock {
    pub now_ms: i64,
    pub max_ahead_ms: i64,
}

impl ReceiverClock {
    pub fn new(now_ms: i64, max_ahead_ms: i64) -> Self {
        Self { now_ms, max_ahead_ms }
    }

    /// Why `ts_ms` is too far ahead of this clock, if it is.
    pub fn ahead_problem(self, ts_ms: i64) -> Option<InvalidReason> {
        let ahead_ms = ts_ms.saturating_sub(self.now_ms);
        (ahead_ms > self.max_ahead_ms).then_some(InvalidReason::FutureTimestamp {
            ts_ms,
            ahead_ms,
            max_ahead_ms: self.max_ahead_ms,
        })
    }
}

/// What a meter measures. Electricity values are Wh; gas and water are litres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Utility {
    Electricity,
    Gas,
    Water,
}

impl Utility {
    pub const ALL: [Utility; 3] = [Utility::Electricity, Utility::Gas, Utility::Water];

    pub fn as_str(self) -> &'static str {
        match self {
            Utility::Electricity => "electricity",
            Utility::Gas => "gas",
            Utility::Water => "water",
        }
    }

    /// The largest value one reading may hold: far above any real interval's
    /// consumption (a gigawatt-hour, a hundred thousand cubic metres), so that
    /// sums of billions of readings stay exact enough and finite.
    pub fn max_reading_value(self) -> f64 {
        match self {
            Utility::Electricity => 1e9,
            Utility::Gas | Utility::Water => 1e8,
        }
    }

    /// Unit of [`Reading::value`] for this utility.
    pub fn unit(self) -> &'static str {
        match self {
            Utility::Electricity => "Wh",
            Utility::Gas | Utility::Water => "L",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(index: usize) -> Option<Utility> {
        Self::ALL.get(index).copied()
    }
}

impl fmt::Display for Utility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Utility {
    type Err = InvalidReason;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|utility| utility.as_str() == name)
            .ok_or_else(|| InvalidReason::UnknownUtility { name: name.to_owned() })
    }
}

/// Whether a customer is a household or a business; it shapes the daily profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CustomerKind {
    Residential,
    Business,
}

impl CustomerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerKind::Residential => "residential",
            CustomerKind::Business => "business",
        }
    }
}

/// One reading: the consumption of one meter in the interval ending at `ts_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reading {
    pub meter_id: u64,
    pub customer_id: u64,
    pub utility: Utility,
    pub region: Region,
    pub customer_kind: CustomerKind,
    /// Event time, UTC milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Consumption in the interval, in [`Utility::unit`].
    pub value: f64,
}

/// Why a reading is refused. Validation reports every reason, not the first.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum InvalidReason {
    #[error("the reading is not a JSON object")]
    NotAnObject,
    #[error("field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("field `{field}` must be {expected}")]
    WrongType { field: &'static str, expected: &'static str },
    #[error("field `{field}` is not part of a reading")]
    UnknownField { field: String },
    #[error("value {value} is negative")]
    NegativeValue { value: f64 },
    #[error("value is not a finite number")]
    NonFiniteValue,
    #[error("value {value:e} is above the {max:e} {unit} one {utility} reading may hold", unit = utility.unit())]
    ImplausibleValue { value: f64, utility: Utility, max: f64 },
    #[error(
        "event time {ts_ms} is {ahead_ms} ms ahead of the receiver's clock (at most {max_ahead_ms} ms allowed, windows.maxClockAheadSecs)"
    )]
    FutureTimestamp { ts_ms: i64, ahead_ms: i64, max_ahead_ms: i64 },
    #[error("event time {ts_ms} is outside the years 2000 to 2199 ({EARLIEST_EVENT_MS} to {LATEST_EVENT_MS} ms)")]
    TimestampOutOfRange { ts_ms: i64 },
    #[error("unknown region `{code}` (expected an ISO 3166-2 code of the region table, e.g. US-CA)")]
    UnknownRegion { code: String },
    #[error("unknown utility `{name}` (expected electricity, gas or water)")]
    UnknownUtility { name: String },
    #[error("unknown customer kind `{name}` (expected residential or business)")]
    UnknownCustomerKind { name: String },
}

impl Reading {
    /// Every rule a typed reading can break: the value must be finite, not
    /// negative and at most [`Utility::max_reading_value`]; the event time must
    /// lie between [`EARLIEST_EVENT_MS`] and [`LATEST_EVENT_MS`] and, with a
    /// receiver clock, not further ahead of it than the clock allows.
    pub fn problems(&self, receiver: Option<ReceiverClock>) -> Vec<InvalidReason> {
        let value_problem = value_problem(self.value, Some(self.utility));
        let time_problem = time_problem(self.ts_ms, receiver);
        value_problem.into_iter().chain(time_problem).collect()
    }

    /// Reads one reading from its JSON form (the edge format), checking every
    /// field and the rules of [`Reading::problems`] against the receiver's clock.
    ///
    /// ```json
    /// {"meterId": 7, "customerId": 3, "utility": "gas", "region": "US-CA",
    ///  "customerKind": "residential", "tsMs": 1764288000000, "value": 12.5}
    /// ```
    pub fn from_json(value: &Value, receiver: ReceiverClock) -> Result<Reading, Vec<InvalidReason>> {
        let Some(object) = value.as_object() else {
            return Err(vec![InvalidReason::NotAnObject]);
        };
        let mut fields = JsonFields { object, problems: Vec::new() };
        for name in object.keys() {
            if !JSON_FIELDS.contains(&name.as_str()) {
                fields.problems.push(InvalidReason::UnknownField { field: name.clone() });
            }
        }
        let meter_id = fields.unsigned("meterId");
        let customer_id = fields.unsigned("customerId");
        let utility = fields.parsed("utility", |name| name.parse::<Utility>().ok(), |name| {
            InvalidReason::UnknownUtility { name }
        });
        let region = fields.parsed("region", Region::from_code, |code| InvalidReason::UnknownRegion { code });
        let customer_kind = fields.parsed(
            "customerKind",
            |name| match name {
                "residential" => Some(CustomerKind::Residential),
                "business" => Some(CustomerKind::Business),
                _ => None,
            },
            |name| InvalidReason::UnknownCustomerKind { name },
        );
        let ts_ms = fields.integer("tsMs");
        let reading_value = fields.number("value");
        let mut problems = fields.problems;
        problems.extend(reading_value.and_then(|value| value_problem(value, utility)));
        problems.extend(ts_ms.and_then(|ts_ms| time_problem(ts_ms, Some(receiver))));
        match (meter_id, customer_id, utility, region, customer_kind, ts_ms, reading_value) {
            (Some(meter_id), Some(customer_id), Some(utility), Some(region), Some(customer_kind), Some(ts_ms), Some(value))
                if problems.is_empty() =>
            {
                Ok(Reading { meter_id, customer_id, utility, region, customer_kind, ts_ms, value })
            }
            _ => Err(problems),
        }
    }

    /// The JSON form read by [`Reading::from_json`].
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| unreachable!("a reading always serialises"))
    }
}

fn value_problem(value: f64, utility: Option<Utility>) -> Option<InvalidReason> {
    if !value.is_finite() {
        Some(InvalidReason::NonFiniteValue)
    } else if value < 0.0 {
        Some(InvalidReason::NegativeValue { value })
    } else if let Some(utility) = utility
        && value > utility.max_reading_value()
    {
        Some(InvalidReason::ImplausibleValue { value, utility, max: utility.max_reading_value() })
    } else {
        None
    }
}

fn time_problem(ts_ms: i64, receiver: Option<ReceiverClock>) -> Option<InvalidReason> {
    if !(EARLIEST_EVENT_MS..LATEST_EVENT_MS).contains(&ts_ms) {
        return Some(InvalidReason::TimestampOutOfRange { ts_ms });
    }
    receiver.and_then(|clock| clock.ahead_problem(ts_ms))
}

const JSON_FIELDS: [&str; 7] = ["meterId", "customerId", "utility", "region", "customerKind", "tsMs", "value"];

struct JsonFields<'a> {
    object: &'a Map<String, Value>,
    problems: Vec<InvalidReason>,
}

impl<'a> JsonFields<'a> {
    fn present(&mut self, field: &'static str) -> Option<&'a Value> {
        match self.object.get(field) {
            None | Some(Value::Null) => {
                self.problems.push(InvalidReason::Missing { field });
                None
            }
            Some(value) => Some(value),
        }
    }

    fn unsigned(&mut self, field: &'static str) -> Option<u64> {
        let value = self.present(field)?.as_u64();
        if value.is_none() {
            self.problems.push(InvalidReason::WrongType { field, expected: "a non-negative integer" });
        }
        value
    }

    fn integer(&mut self, field: &'static str) -> Option<i64> {
        let value = self.present(field)?.as_i64();
        if value.is_none() {
            self.problems.push(InvalidReason::WrongType { field, expected: "an integer (UTC milliseconds)" });
        }
        value
    }

    fn number(&mut self, field: &'static str) -> Option<f64> {
        let value = self.present(field)?.as_f64();
        if value.is_none() {
            self.problems.push(InvalidReason::WrongType { field, expected: "a number" });
        }
        value
    }

    fn parsed<T>(
        &mut self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
        unknown: impl FnOnce(String) -> InvalidReason,
    ) -> Option<T> {
        let Some(text) = self.present(field)?.as_str() else {
            self.problems.push(InvalidReason::WrongType { field, expected: "a string" });
            return None;
        };
        let parsed = parse(text);
        if parsed.is_none() {
            self.problems.push(unknown(text.to_owned()));
        }
        parsed
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_764_288_000_000;
    const HOUR: i64 = 3_600_000;
    const CLOCK: ReceiverClock = ReceiverClock { now_ms: NOW, max_ahead_ms: HOUR };

    fn valid() -> Value {
        json!({"meterId": 7, "customerId": 3, "utility": "gas", "region": "US-CA",
               "customerKind": "residential", "tsMs": NOW, "value": 12.5})
    }

    #[test]
    fn valid_json_round_trips() {
        let reading = Reading::from_json(&valid(), CLOCK).expect("valid reading");
        assert_eq!(reading.utility, Utility::Gas);
        assert_eq!(reading.region.code(), "US-CA");
        assert_eq!(reading.to_json(), valid());
    }

    #[test]
    fn every_reason_is_reported() {
        let bad = json!({"meterId": -1, "utility": "steam", "region": "US-XX", "customerKind": "alien",
                         "tsMs": NOW + 2 * HOUR, "value": -3.0, "colour": "red"});
        let reasons = Reading::from_json(&bad, CLOCK).expect_err("invalid reading");
        let texts: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            vec![
                InvalidReason::UnknownField { field: "colour".into() },
                InvalidReason::WrongType { field: "meterId", expected: "a non-negative integer" },
                InvalidReason::Missing { field: "customerId" },
                InvalidReason::UnknownUtility { name: "steam".into() },
                InvalidReason::UnknownRegion { code: "US-XX".into() },
                InvalidReason::UnknownCustomerKind { name: "alien".into() },
                InvalidReason::NegativeValue { value: -3.0 },
                InvalidReason::FutureTimestamp { ts_ms: NOW + 2 * HOUR, ahead_ms: 2 * HOUR, max_ahead_ms: HOUR },
            ],
            "{texts:#?}"
        );
    }

    #[test]
    fn not_an_object_and_wrong_types() {
        assert_eq!(Reading::from_json(&json!([1, 2]), CLOCK), Err(vec![InvalidReason::NotAnObject]));
        let mut wrong = valid();
        wrong["value"] = json!("12");
        wrong["tsMs"] = json!(1.5);
        let reasons = Reading::from_json(&wrong, CLOCK).expect_err("wrong types");
        assert_eq!(reasons.len(), 2, "{reasons:?}");
    }

    #[test]
    fn typed_rules() {
        let reading = Reading::from_json(&valid(), CLOCK).expect("valid reading");
        assert!(reading.problems(Some(CLOCK)).is_empty());
        let nan = Reading { value: f64::NAN, ..reading };
        assert_eq!(nan.problems(None), vec![InvalidReason::NonFiniteValue]);
        let early = Reading { ts_ms: NOW + HOUR, ..reading };
        assert!(early.problems(Some(CLOCK)).is_empty(), "exactly the allowed hour ahead is allowed");
    }

    #[test]
    fn implausible_values_and_times_near_the_limits_are_refused() {
        let reading = Reading::from_json(&valid(), CLOCK).expect("valid reading");
        let huge = Reading { value: 1e308, ..reading };
        assert_eq!(
            huge.problems(None),
            vec![InvalidReason::ImplausibleValue { value: 1e308, utility: Utility::Gas, max: 1e8 }]
        );
        for ts_ms in [i64::MIN, -1, 0, i64::MAX, LATEST_EVENT_MS] {
            let odd = Reading { ts_ms, ..reading };
            assert_eq!(odd.problems(Some(CLOCK)), vec![InvalidReason::TimestampOutOfRange { ts_ms }], "{ts_ms}");
        }
        let mut json = valid();
        json["value"] = json!(1e308);
        json["tsMs"] = json!(i64::MAX);
        let reasons = Reading::from_json(&json, CLOCK).expect_err("refused");
        assert_eq!(reasons.len(), 2, "{reasons:?}");
    }
}
