//! The edge format: what meters and concentrators send over HTTP and MQTT.
//!
//! A body holds readings in their JSON form ([`Reading::from_json`]) as one
//! object, an array of objects, or NDJSON (one object per line). Every item is
//! checked on its own: a bad item is refused with all its reasons and its
//! index (0-based position in the array or among the non-blank lines), the
//! others are still read. A body that is not JSON at all is one refused item.
//!
//! With a [`Registry`] a reading need only name its meter (`{"meterId",
//! "tsMs", "value"}`) and the registry says the rest; see
//! [`Reading::from_edge_json`].

use serde::Deserialize;
use serde_json::Value;

use crate::reading::{CustomerKind, InvalidReason, Reading, ReceiverClock, Utility};
use crate::region::Region;
use crate::registry::Registry;

/// An item of a body that is not a valid reading.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedItem {
    /// Position in the body: array index or the number of the non-blank line, from 0.
    pub index: usize,
    /// Every reason, in words.
    pub reasons: Vec<String>,
    /// The item as sent (at most [`MAX_RAW_BYTES`] of it), for the dead-letter topic.
    pub raw: String,
}

/// What a body held.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedBody {
    /// Valid readings with their index in the body.
    pub readings: Vec<(usize, Reading)>,
    pub refused: Vec<RefusedItem>,
    /// Some item was refused because the registry does not have its meter
    /// (at its event time): a registry that is behind may have it.
    pub unattributed: bool,
}

impl ParsedBody {
    pub fn items(&self) -> usize {
        self.readings.len() + self.refused.len()
    }
}

/// The body holds more items than allowed; nothing of it was read further.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the body holds {count} readings, more than the {max} allowed in one request")]
pub struct TooManyReadings {
    pub count: usize,
    pub max: usize,
}

/// How much of a refused item is kept for the dead-letter topic.
pub const MAX_RAW_BYTES: usize = 4_096;

/// Reads the readings of a body, checking each against the receiver's clock
/// and, given one, attributing each through the registry.
pub fn parse_body(
    body: &[u8],
    receiver: ReceiverClock,
    max_readings: usize,
    registry: Option<&Registry>,
) -> Result<ParsedBody, TooManyReadings> {
    let trimmed = body.trim_ascii();
    let mut parsed = ParsedBody::default();
    if trimmed.is_empty() {
        return Ok(parsed);
    }
    if trimmed[0] == b'[' {
        let fast = match registry {
            None => serde_json::from_slice::<Vec<Typed<'_>>>(trimmed).ok().and_then(|items| all_valid(&items, receiver)),
            Some(registry) => serde_json::from_slice::<Vec<Slim>>(trimmed).ok().and_then(|items| all_attributed(&items, receiver, registry)),
        };
        if let Some(readings) = fast {
            if readings.len() > max_readings {
                return Err(TooManyReadings { count: readings.len(), max: max_readings });
            }
            parsed.readings = readings.into_iter().enumerate().collect();
            return Ok(parsed);
        }
        match serde_json::from_slice::<Vec<Value>>(trimmed) {
            Ok(items) => {
                if items.len() > max_readings {
                    return Err(TooManyReadings { count: items.len(), max: max_readings });
                }
                for (index, item) in items.iter().enumerate() {
                    check(&mut parsed, index, item, receiver, registry);
                }
            }
            Err(err) => refuse_unreadable(&mut parsed, 0, trimmed, &err),
        }
        return Ok(parsed);
    }
    // One object, possibly spread over lines, or NDJSON: one value per line.
    if let Ok(item) = serde_json::from_slice::<Value>(trimmed) {
        if max_readings == 0 {
            return Err(TooManyReadings { count: 1, max: max_readings });
        }
        check(&mut parsed, 0, &item, receiver, registry);
        return Ok(parsed);
    }
    let lines: Vec<&[u8]> = trimmed.split(|&byte| byte == b'\n').map(<[u8]>::trim_ascii).filter(|line| !line.is_empty()).collect();
    if lines.len() > max_readings {
        return Err(TooManyReadings { count: lines.len(), max: max_readings });
    }
    for (index, line) in lines.into_iter().enumerate() {
        match serde_json::from_slice::<Value>(line) {
            Ok(item) => check(&mut parsed, index, &item, receiver, registry),
            Err(err) => refuse_unreadable(&mut parsed, index, line, &err),
        }
    }
    Ok(parsed)
}

/// A reading in its JSON form with every field present and of the right type:
/// read without building a JSON tree, the path nearly every body takes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Typed<'a> {
    meter_id: u64,
    customer_id: u64,
    #[serde(borrow)]
    utility: &'a str,
    #[serde(borrow)]
    region: &'a str,
    #[serde(borrow)]
    customer_kind: &'a str,
    ts_ms: i64,
    value: f64,
}

/// The readings of `items` when every one is valid; `None` sends the body
/// through the item-by-item path, which names every reason.
fn all_valid(items: &[Typed<'_>], receiver: ReceiverClock) -> Option<Vec<Reading>> {
    items
        .iter()
        .map(|item| {
            let customer_kind = match item.customer_kind {
                "residential" => CustomerKind::Residential,
                "business" => CustomerKind::Business,
                _ => return None,
            };
            let reading = Reading {
                meter_id: item.meter_id,
                customer_id: item.customer_id,
                utility: item.utility.parse::<Utility>().ok()?,
                region: Region::from_code(item.region)?,
                customer_kind,
                ts_ms: item.ts_ms,
                value: item.value,
                cumulative: false,
            };
            reading.problems(Some(receiver)).is_empty().then_some(reading)
        })
        .collect()
}

/// A reading in the edge form a registry completes, read without a JSON tree.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Slim {
    meter_id: u64,
    ts_ms: i64,
    value: f64,
}

/// The readings of `items` when every one is of a meter installed at its
/// event time and valid; `None` sends the body through the item-by-item path.
fn all_attributed(items: &[Slim], receiver: ReceiverClock, registry: &Registry) -> Option<Vec<Reading>> {
    items
        .iter()
        .map(|item| {
            let installation = registry.find(item.meter_id, item.ts_ms).ok()?;
            let reading = Reading {
                meter_id: item.meter_id,
                customer_id: installation.customer_id,
                utility: installation.utility,
                region: installation.region,
                customer_kind: installation.customer_kind,
                ts_ms: item.ts_ms,
                value: item.value * installation.scale(),
                cumulative: installation.register == crate::registry::RegisterKind::Cumulative,
            };
            (item.value.is_finite() && reading.problems(Some(receiver)).is_empty()).then_some(reading)
        })
        .collect()
}

fn check(parsed: &mut ParsedBody, index: usize, item: &Value, receiver: ReceiverClock, registry: Option<&Registry>) {
    match Reading::from_edge_json(item, receiver, registry) {
        Ok(reading) => parsed.readings.push((index, reading)),
        Err(reasons) => {
            parsed.unattributed |= reasons
                .iter()
                .any(|reason| matches!(reason, InvalidReason::UnknownMeter { .. } | InvalidReason::NotInstalled { .. }));
            parsed.refused.push(RefusedItem {
                index,
                reasons: reasons.iter().map(ToString::to_string).collect(),
                raw: truncated(&item.to_string()),
            });
        }
    }
}

fn refuse_unreadable(parsed: &mut ParsedBody, index: usize, bytes: &[u8], err: &serde_json::Error) {
    parsed.refused.push(RefusedItem {
        index,
        reasons: vec![format!("not valid JSON: {err}")],
        raw: truncated(&String::from_utf8_lossy(bytes)),
    });
}

fn truncated(text: &str) -> String {
    if text.len() <= MAX_RAW_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_RAW_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::codec::tests::any_reading;

    const NOW: i64 = 1_795_824_000_000;
    const CLOCK: ReceiverClock = ReceiverClock { now_ms: NOW, max_ahead_ms: 3_600_000 };

    fn json_of(reading: &Reading) -> String {
        reading.to_json().to_string()
    }

    fn sample(index: u64) -> Reading {
        let text = format!(
            r#"{{"meterId": {index}, "customerId": {}, "utility": "water", "region": "US-TX",
                "customerKind": "business", "tsMs": {}, "value": 1.5}}"#,
            index + 100,
            NOW - 1_000
        );
        Reading::from_json(&serde_json::from_str(&text).unwrap(), CLOCK).unwrap()
    }

    #[test]
    fn one_object_spread_over_lines() {
        let body = serde_json::to_string_pretty(&sample(1).to_json()).unwrap();
        let parsed = parse_body(body.as_bytes(), CLOCK, 10, None).unwrap();
        assert_eq!(parsed.readings, vec![(0, sample(1))]);
        assert!(parsed.refused.is_empty());
    }

    #[test]
    fn ndjson_keeps_good_lines_and_names_bad_ones() {
        let body = format!("{}\n\n{{\"meterId\": \n{}\n[1]\n", json_of(&sample(1)), json_of(&sample(2)));
        let parsed = parse_body(body.as_bytes(), CLOCK, 10, None).unwrap();
        assert_eq!(parsed.readings, vec![(0, sample(1)), (2, sample(2))]);
        let indexes: Vec<usize> = parsed.refused.iter().map(|refused| refused.index).collect();
        assert_eq!(indexes, vec![1, 3]);
        assert!(parsed.refused[0].reasons[0].starts_with("not valid JSON"), "{:?}", parsed.refused[0]);
        assert_eq!(parsed.refused[1].reasons, vec!["the reading is not a JSON object"]);
        assert_eq!(parsed.refused[1].raw, "[1]");
    }

    #[test]
    fn array_items_are_checked_one_by_one_with_every_reason() {
        let body = format!(r#"[{}, {{"meterId": 1, "value": -2}}, 7]"#, json_of(&sample(3)));
        let parsed = parse_body(body.as_bytes(), CLOCK, 10, None).unwrap();
        assert_eq!(parsed.readings, vec![(0, sample(3))]);
        assert_eq!(parsed.refused.len(), 2);
        assert_eq!(parsed.refused[0].index, 1);
        assert!(parsed.refused[0].reasons.len() >= 6, "missing fields and the negative value: {:?}", parsed.refused[0]);
        assert!(parsed.refused[0].reasons.iter().any(|reason| reason.contains("negative")));
        assert_eq!(parsed.refused[1].index, 2);
    }

    #[test]
    fn limits_and_unreadable_bodies() {
        let body = format!("[{0}, {0}, {0}]", json_of(&sample(4)));
        assert_eq!(parse_body(body.as_bytes(), CLOCK, 2, None), Err(TooManyReadings { count: 3, max: 2 }));
        let ndjson = format!("{0}\n{0}\n{0}\n", json_of(&sample(4)));
        assert_eq!(parse_body(ndjson.as_bytes(), CLOCK, 2, None), Err(TooManyReadings { count: 3, max: 2 }));
        let parsed = parse_body(b"[{\"meterId\": 1,", CLOCK, 2, None).unwrap();
        assert_eq!(parsed.refused.len(), 1);
        assert!(parsed.refused[0].reasons[0].contains("EOF"), "{:?}", parsed.refused[0]);
        assert_eq!(parse_body(b"  \n ", CLOCK, 2, None).unwrap(), ParsedBody::default());
        let huge = format!("\"{}\"", "é".repeat(MAX_RAW_BYTES));
        let parsed = parse_body(huge.as_bytes(), CLOCK, 2, None).unwrap();
        assert!(parsed.refused[0].raw.len() <= MAX_RAW_BYTES);
    }

    fn registry() -> Registry {
        let mut exchanged = crate::registry::tests::installation(7, 42, NOW - 86_400_000, Some(NOW - 3_600_000));
        exchanged.unit = crate::registry::MeterUnit::Wh;
        let mut current = crate::registry::tests::installation(8, 42, NOW - 3_600_000, None);
        current.multiplier = 2.0;
        Registry::from_rows(vec![(2, Ok(exchanged)), (3, Ok(current))]).unwrap()
    }

    #[test]
    fn a_registry_says_whose_a_reading_is_and_scales_its_value() {
        let registry = registry();
        let body = format!(
            r#"[{{"meterId": 8, "tsMs": {now}, "value": 1.5}}, {{"meterId": 7, "tsMs": {old}, "value": 3}}]"#,
            now = NOW - 1_000,
            old = NOW - 7_200_000
        );
        let parsed = parse_body(body.as_bytes(), CLOCK, 10, Some(&registry)).unwrap();
        assert!(parsed.refused.is_empty(), "{:?}", parsed.refused);
        let (_, current) = parsed.readings[0];
        assert_eq!((current.customer_id, current.region.code(), current.utility, current.value), (42, "US-CA", Utility::Electricity, 3_000.0));
        assert_eq!(parsed.readings[1].1.value, 3.0, "meter 7 counts Wh with multiplier 1");

        // The full form is accepted when it agrees, refused naming the field when it does not.
        let full = |customer: u64, region: &str| {
            format!(
                r#"{{"meterId": 8, "customerId": {customer}, "utility": "electricity", "region": "{region}",
                    "customerKind": "residential", "tsMs": {}, "value": 1}}"#,
                NOW - 1_000
            )
        };
        let agreeing = parse_body(full(42, "US-CA").as_bytes(), CLOCK, 10, Some(&registry)).unwrap();
        assert_eq!(agreeing.readings.len(), 1, "{:?}", agreeing.refused);
        let forged = parse_body(full(43, "US-TX").as_bytes(), CLOCK, 10, Some(&registry)).unwrap();
        assert_eq!(
            forged.refused[0].reasons,
            [
                "field `customerId`: the reading says 43, the registry has 42 for meter 8",
                "field `region`: the reading says US-TX, the registry has US-CA for meter 8"
            ]
        );

        let unknown = format!(r#"{{"meterId": 9, "tsMs": {}, "value": 1}}"#, NOW);
        let refused = parse_body(unknown.as_bytes(), CLOCK, 10, Some(&registry)).unwrap().refused;
        assert_eq!(refused[0].reasons, ["meter 9 is not in the registry (auth registry import adds it)"]);
        let exchanged = format!(r#"[{{"meterId": 7, "tsMs": {}, "value": 1}}]"#, NOW - 1_000);
        let refused = parse_body(exchanged.as_bytes(), CLOCK, 10, Some(&registry)).unwrap().refused;
        assert!(refused[0].reasons[0].starts_with("meter 7 is not installed at event time"), "{refused:?}");
        let slim_without_registry = format!(r#"{{"meterId": 8, "tsMs": {}, "value": 1}}"#, NOW);
        let refused = parse_body(slim_without_registry.as_bytes(), CLOCK, 10, None).unwrap().refused;
        assert!(refused[0].reasons.contains(&"field `customerId` is missing".to_owned()), "{refused:?}");
    }

    /// The item-by-item path alone, to compare the typed path with.
    fn checked_one_by_one(body: &[u8]) -> ParsedBody {
        let items: Vec<Value> = serde_json::from_slice(body).unwrap();
        let mut parsed = ParsedBody::default();
        for (index, item) in items.iter().enumerate() {
            check(&mut parsed, index, item, CLOCK, None);
        }
        parsed
    }

    proptest! {
        #[test]
        fn the_typed_path_agrees_with_checking_one_by_one(
            readings in proptest::collection::vec(any_reading(), 1..10),
            damage in 0..6usize,
        ) {
            let mut items: Vec<Value> = readings.iter().map(Reading::to_json).collect();
            let first = &mut items[0];
            match damage {
                0 => {}
                1 => first["value"] = serde_json::json!(-1.0),
                2 => first["region"] = serde_json::json!("US-X\\u0041"),
                3 => first["extra"] = serde_json::json!(1),
                4 => first["tsMs"] = serde_json::json!(NOW + 3_600_000),
                _ => first["customerKind"] = serde_json::json!("alien"),
            }
            let body = serde_json::to_vec(&items).unwrap();
            prop_assert_eq!(parse_body(&body, CLOCK, 100, None).unwrap(), checked_one_by_one(&body));
        }

        #[test]
        fn every_valid_reading_comes_back_in_every_form(readings in proptest::collection::vec(any_reading(), 1..20)) {
            let valid: Vec<Reading> = readings.into_iter().filter(|reading| reading.problems(Some(CLOCK)).is_empty()).collect();
            let expected: Vec<(usize, Reading)> = valid.iter().copied().enumerate().collect();
            let lines: Vec<String> = valid.iter().map(json_of).collect();
            let array = format!("[{}]", lines.join(","));
            let ndjson = lines.join("\n");
            for body in [array, ndjson] {
                let parsed = parse_body(body.as_bytes(), CLOCK, 100, None).unwrap();
                prop_assert!(parsed.refused.is_empty(), "{:?}", parsed.refused);
                prop_assert_eq!(&parsed.readings, &expected);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_every_item_is_accounted(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(parsed) = parse_body(&bytes, CLOCK, 1_000, None) {
                let mut indexes: Vec<usize> = parsed.readings.iter().map(|(index, _)| *index)
                    .chain(parsed.refused.iter().map(|refused| refused.index)).collect();
                indexes.sort_unstable();
                prop_assert_eq!(indexes, (0..parsed.items()).collect::<Vec<_>>());
                prop_assert!(parsed.refused.iter().all(|refused| !refused.reasons.is_empty()));
            }
        }
    }
}
