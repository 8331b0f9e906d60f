//! The reading: one interval's consumption from one meter, and its validation.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::region::Region;
use crate::registry::{Installation, RegisterKind, Registry};

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

/// One reading: the consumption of one meter in the interval ending at
/// `ts_ms`, or, from a meter the registry says is cumulative, its register
/// at `ts_ms` (`cumulative`), which the stream and the batch turn into consumption.
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
    /// Consumption in the interval, or the register when `cumulative`, in [`Utility::unit`].
    pub value: f64,
    /// The value is the meter's register (its running total), not one interval's consumption.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cumulative: bool,
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
    #[error("meter {meter_id} is not in the registry (auth registry import adds it)")]
    UnknownMeter { meter_id: u64 },
    #[error("meter {meter_id} is not installed at event time {ts_ms} (its registered periods, UTC ms: {periods})")]
    NotInstalled { meter_id: u64, ts_ms: i64, periods: String },
    #[error("field `{field}`: the reading says {claimed}, the registry has {registered} for meter {meter_id}")]
    DisagreesWithRegistry { field: &'static str, claimed: String, registered: String, meter_id: u64 },
    #[error("register {value:e} is above the {max:e} {unit} a meter's register may hold", unit = utility.unit())]
    ImplausibleRegister { value: f64, utility: Utility, max: f64 },
}

impl Reading {
    /// Every rule a typed reading can break: the value must be finite, not
    /// negative and at most [`Utility::max_reading_value`]; the event time must
    /// lie between [`EARLIEST_EVENT_MS`] and [`LATEST_EVENT_MS`] and, with a
    /// receiver clock, not further ahead of it than the clock allows.
    pub fn problems(&self, receiver: Option<ReceiverClock>) -> Vec<InvalidReason> {
        let value_problem = match self.cumulative {
            true => register_problem(self.value, self.utility),
            false => value_problem(self.value, Some(self.utility)),
        };
        let time_problem = time_problem(self.ts_ms, receiver);
        value_problem.into_iter().chain(time_problem).collect()
    }

    /// Reads one reading from its JSON form (the edge format), checking every
    /// field and the rules of [`Reading::problems`] against the receiver's
    /// clock. The reading says itself whose it is: every field is required.
    ///
    /// ```json
    /// {"meterId": 7, "customerId": 3, "utility": "gas", "region": "US-CA",
    ///  "customerKind": "residential", "tsMs": 1764288000000, "value": 12.5}
    /// ```
    pub fn from_json(value: &Value, receiver: ReceiverClock) -> Result<Reading, Vec<InvalidReason>> {
        Self::from_edge_json(value, receiver, None)
    }

    /// Reads one reading in the edge format. With a registry the reading need
    /// only name its meter, `{"meterId": 7, "tsMs": 1764288000000, "value":
    /// 0.5}`: the installation valid at its event time gives the customer,
    /// region, utility and kind, and its unit and multiplier scale the value
    /// to the utility's unit. A field the reading does give must agree with
    /// the registry. Without a registry every field is required, as in
    /// [`Reading::from_json`].
    pub fn from_edge_json(value: &Value, receiver: ReceiverClock, registry: Option<&Registry>) -> Result<Reading, Vec<InvalidReason>> {
        let Some(object) = value.as_object() else {
            return Err(vec![InvalidReason::NotAnObject]);
        };
        let mut fields = JsonFields { object, problems: Vec::new(), optional: registry.is_some() };
        for name in object.keys() {
            if !JSON_FIELDS.contains(&name.as_str()) {
                fields.problems.push(InvalidReason::UnknownField { field: name.clone() });
            }
        }
        let meter_id = fields.unsigned("meterId", true);
        let claims = Claims {
            customer_id: fields.unsigned("customerId", false),
            utility: fields.parsed("utility", |name| name.parse::<Utility>().ok(), |name| InvalidReason::UnknownUtility { name }),
            region: fields.parsed("region", Region::from_code, |code| InvalidReason::UnknownRegion { code }),
            customer_kind: fields.parsed(
                "customerKind",
                |name| match name {
                    "residential" => Some(CustomerKind::Residential),
                    "business" => Some(CustomerKind::Business),
                    _ => None,
                },
                |name| InvalidReason::UnknownCustomerKind { name },
            ),
        };
        let ts_ms = fields.integer("tsMs");
        let reading_value = fields.number("value");
        let mut problems = fields.problems;
        let time = ts_ms.and_then(|ts_ms| time_problem(ts_ms, Some(receiver)));
        let (Some(meter_id), Some(ts_ms), Some(raw_value)) = (meter_id, ts_ms, reading_value) else {
            problems.extend(reading_value.and_then(|value| value_problem(value, claims.utility)));
            problems.extend(time);
            return Err(problems);
        };
        match registry {
            None => {
                problems.extend(value_problem(raw_value, claims.utility));
                problems.extend(time);
                match claims {
                    Claims { customer_id: Some(customer_id), utility: Some(utility), region: Some(region), customer_kind: Some(customer_kind) }
                        if problems.is_empty() =>
                    {
                        Ok(Reading { meter_id, customer_id, utility, region, customer_kind, ts_ms, value: raw_value, cumulative: false })
                    }
                    _ => Err(problems),
                }
            }
            Some(registry) => match registry.find(meter_id, ts_ms) {
                Err(unattributed) => {
                    problems.push(unattributed);
                    problems.extend(value_problem(raw_value, claims.utility));
                    problems.extend(time);
                    Err(problems)
                }
                Ok(installation) => {
                    problems.extend(claims.disagreements(installation));
                    let cumulative = installation.register == RegisterKind::Cumulative;
                    let value = raw_value * installation.scale();
                    problems.extend(match cumulative {
                        true => register_problem(value, installation.utility),
                        false => value_problem(value, Some(installation.utility)),
                    });
                    problems.extend(time);
                    if !problems.is_empty() {
                        return Err(problems);
                    }
                    Ok(Reading {
                        meter_id,
                        customer_id: installation.customer_id,
                        utility: installation.utility,
                        region: installation.region,
                        customer_kind: installation.customer_kind,
                        ts_ms,
                        value,
                        cumulative,
                    })
                }
            },
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

/// The largest register a reading may hold: a billion kWh (or m³), far
/// above any meter's dials times its multiplier, and small enough that
/// differences of registers keep a thousandth of the unit.
pub const MAX_REGISTER_VALUE: f64 = 1e12;

fn register_problem(value: f64, utility: Utility) -> Option<InvalidReason> {
    if value > MAX_REGISTER_VALUE {
        return Some(InvalidReason::ImplausibleRegister { value, utility, max: MAX_REGISTER_VALUE });
    }
    value_problem(value, None)
}

fn time_problem(ts_ms: i64, receiver: Option<ReceiverClock>) -> Option<InvalidReason> {
    if !(EARLIEST_EVENT_MS..LATEST_EVENT_MS).contains(&ts_ms) {
        return Some(InvalidReason::TimestampOutOfRange { ts_ms });
    }
    receiver.and_then(|clock| clock.ahead_problem(ts_ms))
}

const JSON_FIELDS: [&str; 7] = ["meterId", "customerId", "utility", "region", "customerKind", "tsMs", "value"];

/// What a reading says of whose it is.
struct Claims {
    customer_id: Option<u64>,
    utility: Option<Utility>,
    region: Option<Region>,
    customer_kind: Option<CustomerKind>,
}

impl Claims {
    /// Every field that disagrees with the meter's installation.
    fn disagreements(&self, installation: &Installation) -> Vec<InvalidReason> {
        let disagreement = |field: &'static str, claimed: String, registered: String| InvalidReason::DisagreesWithRegistry {
            field,
            claimed,
            registered,
            meter_id: installation.meter_id,
        };
        let mut problems = Vec::new();
        if let Some(customer_id) = self.customer_id.filter(|&id| id != installation.customer_id) {
            problems.push(disagreement("customerId", customer_id.to_string(), installation.customer_id.to_string()));
        }
        if let Some(utility) = self.utility.filter(|&utility| utility != installation.utility) {
            problems.push(disagreement("utility", utility.to_string(), installation.utility.to_string()));
        }
        if let Some(region) = self.region.filter(|&region| region != installation.region) {
            problems.push(disagreement("region", region.code().to_owned(), installation.region.code().to_owned()));
        }
        if let Some(kind) = self.customer_kind.filter(|&kind| kind != installation.customer_kind) {
            problems.push(disagreement("customerKind", kind.as_str().to_owned(), installation.customer_kind.as_str().to_owned()));
        }
        problems
    }
}

struct JsonFields<'a> {
    object: &'a Map<String, Value>,
    problems: Vec<InvalidReason>,
    /// Whether the fields a registry knows (customer, utility, region, kind) may be absent.
    optional: bool,
}

impl<'a> JsonFields<'a> {
    fn present(&mut self, field: &'static str, required: bool) -> Option<&'a Value> {
        match self.object.get(field) {
            None | Some(Value::Null) => {
                if required {
                    self.problems.push(InvalidReason::Missing { field });
                }
                None
            }
            Some(value) => Some(value),
        }
    }

    fn unsigned(&mut self, field: &'static str, required: bool) -> Option<u64> {
        let required = required || !self.optional;
        let value = self.present(field, required)?.as_u64();
        if value.is_none() {
            self.problems.push(InvalidReason::WrongType { field, expected: "a non-negative integer" });
        }
        value
    }

    fn integer(&mut self, field: &'static str) -> Option<i64> {
        let value = self.present(field, true)?.as_i64();
        if value.is_none() {
            self.problems.push(InvalidReason::WrongType { field, expected: "an integer (UTC milliseconds)" });
        }
        value
    }

    fn number(&mut self, field: &'static str) -> Option<f64> {
        let value = self.present(field, true)?.as_f64();
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
        let required = !self.optional;
        let Some(text) = self.present(field, required)?.as_str() else {
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
