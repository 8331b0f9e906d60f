//! The reading: one interval's consumption from one meter, and its validation.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::region::Region;

/// How far ahead of the receiver's clock an event time may be.
pub const MAX_FUTURE_MS: i64 = 3_600_000;

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
    #[error("event time {ts_ms} is {ahead_ms} ms ahead of the receiver's clock (at most {MAX_FUTURE_MS} ms allowed)")]
    FutureTimestamp { ts_ms: i64, ahead_ms: i64 },
    #[error("unknown region `{code}` (expected an ISO 3166-2 code of the region table, e.g. US-CA)")]
    UnknownRegion { code: String },
    #[error("unknown utility `{name}` (expected electricity, gas or water)")]
    UnknownUtility { name: String },
    #[error("unknown customer kind `{name}` (expected residential or business)")]
    UnknownCustomerKind { name: String },
}

impl Reading {
    /// Every rule a typed reading can break: the value must be finite and not
    /// negative; with a receiver clock, the event time may be at most
    /// [`MAX_FUTURE_MS`] ahead of it.
    pub fn problems(&self, receiver_now_ms: Option<i64>) -> Vec<InvalidReason> {
        let value_problem = value_problem(self.value);
        let time_problem = receiver_now_ms.and_then(|now_ms| time_problem(self.ts_ms, now_ms));
        value_problem.into_iter().chain(time_problem).collect()
    }

    /// Reads one reading from its JSON form (the edge format), checking every
    /// field and the rules of [`Reading::problems`] against `receiver_now_ms`.
    ///
    /// ```json
    /// {"meterId": 7, "customerId": 3, "utility": "gas", "region": "US-CA",
    ///  "customerKind": "residential", "tsMs": 1764288000000, "value": 12.5}
    /// ```
    pub fn from_json(value: &Value, receiver_now_ms: i64) -> Result<Reading, Vec<InvalidReason>> {
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
        problems.extend(reading_value.and_then(value_problem));
        problems.extend(ts_ms.and_then(|ts_ms| time_problem(ts_ms, receiver_now_ms)));
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

fn value_problem(value: f64) -> Option<InvalidReason> {
    if !value.is_finite() {
        Some(InvalidReason::NonFiniteValue)
    } else if value < 0.0 {
        Some(InvalidReason::NegativeValue { value })
    } else {
        None
    }
}

fn time_problem(ts_ms: i64, receiver_now_ms: i64) -> Option<InvalidReason> {
    let ahead_ms = ts_ms.saturating_sub(receiver_now_ms);
    (ahead_ms > MAX_FUTURE_MS).then_some(InvalidReason::FutureTimestamp { ts_ms, ahead_ms })
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

    fn valid() -> Value {
        json!({"meterId": 7, "customerId": 3, "utility": "gas", "region": "US-CA",
               "customerKind": "residential", "tsMs": NOW, "value": 12.5})
    }

    #[test]
    fn valid_json_round_trips() {
        let reading = Reading::from_json(&valid(), NOW).expect("valid reading");
        assert_eq!(reading.utility, Utility::Gas);
        assert_eq!(reading.region.code(), "US-CA");
        assert_eq!(reading.to_json(), valid());
    }

    #[test]
    fn every_reason_is_reported() {
        let bad = json!({"meterId": -1, "utility": "steam", "region": "US-XX", "customerKind": "alien",
                         "tsMs": NOW + 2 * MAX_FUTURE_MS, "value": -3.0, "colour": "red"});
        let reasons = Reading::from_json(&bad, NOW).expect_err("invalid reading");
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
                InvalidReason::FutureTimestamp { ts_ms: NOW + 2 * MAX_FUTURE_MS, ahead_ms: 2 * MAX_FUTURE_MS },
            ],
            "{texts:#?}"
        );
    }

    #[test]
    fn not_an_object_and_wrong_types() {
        assert_eq!(Reading::from_json(&json!([1, 2]), NOW), Err(vec![InvalidReason::NotAnObject]));
        let mut wrong = valid();
        wrong["value"] = json!("12");
        wrong["tsMs"] = json!(1.5);
        let reasons = Reading::from_json(&wrong, NOW).expect_err("wrong types");
        assert_eq!(reasons.len(), 2, "{reasons:?}");
    }

    #[test]
    fn typed_rules() {
        let reading = Reading::from_json(&valid(), NOW).expect("valid reading");
        assert!(reading.problems(Some(NOW)).is_empty());
        let nan = Reading { value: f64::NAN, ..reading };
        assert_eq!(nan.problems(None), vec![InvalidReason::NonFiniteValue]);
        let early = Reading { ts_ms: NOW + MAX_FUTURE_MS, ..reading };
        assert!(early.problems(Some(NOW)).is_empty(), "exactly one hour ahead is allowed");
    }
}
