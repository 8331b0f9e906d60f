//! Dead letters: one shape for every input AUTH refused, on `<pipeline>.dlq`.
//!
//! A dead letter is JSON (camelCase). Every letter says where the input came
//! from (`source`), why it was refused (`reasons`, and `reason`, the same
//! joined with "; ") and when (`receivedMs`); then, by source, the gateway's
//! key and the item as sent (`http`, `mqtt`), or the log position and bytes of
//! a record the stream could not use (`log`).

use serde::{Deserialize, Serialize};

/// Where a refused input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterSource {
    /// `POST /api/v1/readings` at the gateway.
    Http,
    /// An MQTT message to the gateway.
    Mqtt,
    /// A log record the stream processor could not decode or use.
    Log,
}

/// One refused input with every reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub source: DeadLetterSource,
    pub reasons: Vec<String>,
    /// `reasons` joined with "; ".
    pub reason: String,
    pub received_ms: i64,
    /// The gateway key's id (`http`, `mqtt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The item's position in its body (`http`, `mqtt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The item as sent, possibly cut short (`http`, `mqtt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// The record's topic, partition and offset (`log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The record's value in hexadecimal (`log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hex: Option<String>,
}

impl DeadLetter {
    /// An item refused at the gateway.
    pub fn of_item(source: DeadLetterSource, key_id: &str, index: usize, reasons: Vec<String>, item: String, received_ms: i64) -> Self {
        Self {
            key_id: Some(key_id.to_owned()),
            index: Some(index),
            item: Some(item),
            ..Self::new(source, reasons, received_ms)
        }
    }

    /// A log record the stream refused.
    pub fn of_record(topic: &str, partition: u32, offset: u64, reasons: Vec<String>, value: &[u8], received_ms: i64) -> Self {
        Self {
            topic: Some(topic.to_owned()),
            partition: Some(partition),
            offset: Some(offset),
            value_hex: Some(hex_of(value)),
            ..Self::new(DeadLetterSource::Log, reasons, received_ms)
        }
    }

    fn new(source: DeadLetterSource, reasons: Vec<String>, received_ms: i64) -> Self {
        Self {
            source,
            reason: reasons.join("; "),
            reasons,
            received_ms,
            key_id: None,
            index: None,
            item: None,
            topic: None,
            partition: None,
            offset: None,
            value_hex: None,
        }
    }

    /// The letter as the dead-letter topic's value.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_of_both_kinds_round_trip_and_leave_out_what_they_lack() {
        let record = DeadLetter::of_record("p.water", 2, 17, vec!["41 bytes expected".into()], &[1, 0xab], 5);
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).expect("JSON");
        assert_eq!(json["source"], "log");
        assert_eq!(json["valueHex"], "01ab");
        assert_eq!(json["reason"], "41 bytes expected");
        assert!(json.get("keyId").is_none());
        let item = DeadLetter::of_item(DeadLetterSource::Mqtt, "k1", 3, vec!["a".into(), "b".into()], "{}".into(), 9);
        let back: DeadLetter = serde_json::from_slice(&item.to_json()).expect("decodes");
        assert_eq!(back, item);
        assert_eq!(back.reason, "a; b");
    }
}
