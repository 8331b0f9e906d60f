//! The edge format: what meters and concentrators send over HTTP and MQTT.
//!
//! A body holds readings in their JSON form ([`Reading::from_json`]) as one
//! object, an array of objects, or NDJSON (one object per line). Every item is
//! checked on its own: a bad item is refused with all its reasons and its
//! index (0-based position in the array or among the non-blank lines), the
//! others are still read. A body that is not JSON at all is one refused item.

use serde::Deserialize;
use serde_json::Value;

use crate::reading::{CustomerKind, Reading, ReceiverClock, Utility};
use crate::region::Region;

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

/// Reads the readings of a body, checking each against the receiver's clock.
pub fn parse_body(body: &[u8], receiver: ReceiverClock, max_readings: usize) -> Result<ParsedBody, TooManyReadings> {
    let trimmed = body.trim_ascii();
    let mut parsed = ParsedBody::default();
    if trimmed.is_empty() {
        return Ok(parsed);
    }
    if trimmed[0] == b'[' {
        if let Ok(items) = serde_json::from_slice::<Vec<Typed<'_>>>(trimmed)
            && let Some(readings) = all_valid(&items, receiver)
        {
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
                    check(&mut parsed, index, item, receiver);
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
        check(&mut parsed, 0, &item, receiver);
        return Ok(parsed);
    }
    let lines: Vec<&[u8]> = trimmed.split(|&byte| byte == b'\n').map(<[u8]>::trim_ascii).filter(|line| !line.is_empty()).collect();
    if lines.len() > max_readings {
        return Err(TooManyReadings { count: lines.len(), max: max_readings });
    }
    for (index, line) in lines.into_iter().enumerate() {
        match serde_json::from_slice::<Value>(line) {
            Ok(item) => check(&mut parsed, index, &item, receiver),
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
            };
            reading.problems(Some(receiver)).is_empty().then_some(reading)
        })
        .collect()
}

fn check(parsed: &mut ParsedBody, index: usize, item: &Value, receiver: ReceiverClock) {
    match Reading::from_json(item, receiver) {
        Ok(reading) => parsed.readings.push((index, reading)),
        Err(reasons) => parsed.refused.push(RefusedItem {
            index,
            reasons: reasons.iter().map(ToString::to_string).collect(),
            raw: truncated(&item.to_string()),
        }),
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
        let parsed = parse_body(body.as_bytes(), CLOCK, 10).unwrap();
        assert_eq!(parsed.readings, vec![(0, sample(1))]);
        assert!(parsed.refused.is_empty());
    }

    #[test]
    fn ndjson_keeps_good_lines_and_names_bad_ones() {
        let body = format!("{}\n\n{{\"meterId\": \n{}\n[1]\n", json_of(&sample(1)), json_of(&sample(2)));
        let parsed = parse_body(body.as_bytes(), CLOCK, 10).unwrap();
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
        let parsed = parse_body(body.as_bytes(), CLOCK, 10).unwrap();
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
        assert_eq!(parse_body(body.as_bytes(), CLOCK, 2), Err(TooManyReadings { count: 3, max: 2 }));
        let ndjson = format!("{0}\n{0}\n{0}\n", json_of(&sample(4)));
        assert_eq!(parse_body(ndjson.as_bytes(), CLOCK, 2), Err(TooManyReadings { count: 3, max: 2 }));
        let parsed = parse_body(b"[{\"meterId\": 1,", CLOCK, 2).unwrap();
        assert_eq!(parsed.refused.len(), 1);
        assert!(parsed.refused[0].reasons[0].contains("EOF"), "{:?}", parsed.refused[0]);
        assert_eq!(parse_body(b"  \n ", CLOCK, 2).unwrap(), ParsedBody::default());
        let huge = format!("\"{}\"", "é".repeat(MAX_RAW_BYTES));
        let parsed = parse_body(huge.as_bytes(), CLOCK, 2).unwrap();
        assert!(parsed.refused[0].raw.len() <= MAX_RAW_BYTES);
    }

    /// The item-by-item path alone, to compare the typed path with.
    fn checked_one_by_one(body: &[u8]) -> ParsedBody {
        let items: Vec<Value> = serde_json::from_slice(body).unwrap();
        let mut parsed = ParsedBody::default();
        for (index, item) in items.iter().enumerate() {
            check(&mut parsed, index, item, CLOCK);
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
            prop_assert_eq!(parse_body(&body, CLOCK, 100).unwrap(), checked_one_by_one(&body));
        }

        #[test]
        fn every_valid_reading_comes_back_in_every_form(readings in proptest::collection::vec(any_reading(), 1..20)) {
            let valid: Vec<Reading> = readings.into_iter().filter(|reading| reading.problems(Some(CLOCK)).is_empty()).collect();
            let expected: Vec<(usize, Reading)> = valid.iter().copied().enumerate().collect();
            let lines: Vec<String> = valid.iter().map(json_of).collect();
            let array = format!("[{}]", lines.join(","));
            let ndjson = lines.join("\n");
            for body in [array, ndjson] {
                let parsed = parse_body(body.as_bytes(), CLOCK, 100).unwrap();
                prop_assert!(parsed.refused.is_empty(), "{:?}", parsed.refused);
                prop_assert_eq!(&parsed.readings, &expected);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_every_item_is_accounted(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(parsed) = parse_body(&bytes, CLOCK, 1_000) {
                let mut indexes: Vec<usize> = parsed.readings.iter().map(|(index, _)| *index)
                    .chain(parsed.refused.iter().map(|refused| refused.index)).collect();
                indexes.sort_unstable();
                prop_assert_eq!(indexes, (0..parsed.items()).collect::<Vec<_>>());
                prop_assert!(parsed.refused.iter().all(|refused| !refused.reasons.is_empty()));
            }
        }
    }
}
