//! The binary form of a reading in the log (Kafka values, the embedded log).
//!
//! Version 1 is a fixed 41-byte record, all integers little-endian:
//!
//! | offset | size | field                                                  |
//! |-------:|-----:|--------------------------------------------------------|
//! | 0      | 1    | format version, `1`                                    |
//! | 1      | 1    | utility: 0 electricity, 1 gas, 2 water                 |
//! | 2      | 1    | customer kind: 0 residential, 1 business               |
//! | 3      | 6    | region, ISO 3166-2 code in ASCII, NUL-padded           |
//! | 9      | 8    | meter id, u64                                          |
//! | 17     | 8    | customer id, u64                                       |
//! | 25     | 8    | event time, i64 UTC milliseconds                       |
//! | 33     | 8    | value, IEEE 754 f64                                    |
//!
//! Version 2 has version 1's layout; its value is the meter's register (a
//! cumulative meter's running total, [`Reading::cumulative`]) instead of one
//! interval's consumption. Interval readings are written as version 1.
//!
//! A decoder accepts exactly the versions it knows; a new layout gets a new
//! version byte, and decoders keep reading the old ones. Decoding never panics:
//! any byte string either decodes or yields a [`DecodeError`] saying why.

use bytes::BufMut;

use crate::reading::{CustomerKind, Reading, Utility};
use crate::region::{MAX_CODE_LEN, Region};

/// The version this build writes for an interval reading...
pub const VERSION: u8 = 1;
/// ... and for a register.
pub const VERSION_REGISTER: u8 = 2;
/// Size of a record of either version.
pub const ENCODED_LEN: usize = 41;

/// Why bytes from the log are not a reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty value")]
    Empty,
    #[error("unsupported format version {0} (this build reads versions {VERSION} and {VERSION_REGISTER})")]
    UnsupportedVersion(u8),
    #[error("value is {actual} bytes, records are {ENCODED_LEN}")]
    WrongLength { actual: usize },
    #[error("unknown utility code {0}")]
    UnknownUtility(u8),
    #[error("unknown customer kind code {0}")]
    UnknownCustomerKind(u8),
    #[error("unknown region code {0:?}")]
    UnknownRegion(String),
}

/// Appends the encoding of `reading` (version 1, or 2 for a register) to `out` (a `Vec<u8>`, a
/// `BytesMut`, or a slice with at least [`ENCODED_LEN`] bytes of room).
pub fn encode_into(reading: &Reading, out: &mut impl BufMut) {
    out.put_u8(if reading.cumulative { VERSION_REGISTER } else { VERSION });
    out.put_u8(reading.utility.index() as u8);
    out.put_u8(match reading.customer_kind {
        CustomerKind::Residential => 0,
        CustomerKind::Business => 1,
    });
    let mut code = [0u8; MAX_CODE_LEN];
    let text = reading.region.code().as_bytes();
    code[..text.len()].copy_from_slice(text);
    out.put_slice(&code);
    out.put_u64_le(reading.meter_id);
    out.put_u64_le(reading.customer_id);
    out.put_i64_le(reading.ts_ms);
    out.put_f64_le(reading.value);
}

/// The encoding of `reading`.
pub fn encode(reading: &Reading) -> [u8; ENCODED_LEN] {
    let mut record = [0u8; ENCODED_LEN];
    encode_into(reading, &mut &mut record[..]);
    record
}

/// Decodes one log value.
pub fn decode(bytes: &[u8]) -> Result<Reading, DecodeError> {
    let version = *bytes.first().ok_or(DecodeError::Empty)?;
    if version != VERSION && version != VERSION_REGISTER {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let record: &[u8; ENCODED_LEN] =
        bytes.try_into().map_err(|_| DecodeError::WrongLength { actual: bytes.len() })?;
    let utility = Utility::from_index(usize::from(record[1])).ok_or(DecodeError::UnknownUtility(record[1]))?;
    let customer_kind = match record[2] {
        0 => CustomerKind::Residential,
        1 => CustomerKind::Business,
        other => return Err(DecodeError::UnknownCustomerKind(other)),
    };
    let code = &record[3..3 + MAX_CODE_LEN];
    let code_len = code.iter().position(|&byte| byte == 0).unwrap_or(MAX_CODE_LEN);
    let region = Region::from_code_bytes(&code[..code_len])
        .ok_or_else(|| DecodeError::UnknownRegion(String::from_utf8_lossy(&code[..code_len]).into_owned()))?;
    let word = |at: usize| {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&record[at..at + 8]);
        eight
    };
    Ok(Reading {
        meter_id: u64::from_le_bytes(word(9)),
        customer_id: u64::from_le_bytes(word(17)),
        utility,
        region,
        customer_kind,
        ts_ms: i64::from_le_bytes(word(25)),
        value: f64::from_le_bytes(word(33)),
        cumulative: version == VERSION_REGISTER,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    pub(crate) fn any_reading() -> impl Strategy<Value = Reading> {
        (
            any::<u64>(),
            any::<u64>(),
            0..3usize,
            0..51usize,
            any::<bool>(),
            any::<i64>(),
            any::<f64>(),
            any::<bool>(),
        )
            .prop_map(|(meter_id, customer_id, utility, region, business, ts_ms, value, cumulative)| Reading {
                meter_id,
                customer_id,
                utility: Utility::ALL[utility],
                region: Region::from_index(region).unwrap_or_else(|| unreachable!("index below the table length")),
                customer_kind: if business { CustomerKind::Business } else { CustomerKind::Residential },
                ts_ms,
                value,
                cumulative,
            })
    }

    proptest! {
        #[test]
        fn round_trips(reading in any_reading()) {
            let bytes = encode(&reading);
            let decoded = decode(&bytes).expect("own encoding decodes");
            prop_assert_eq!(decoded.value.to_bits(), reading.value.to_bits());
            prop_assert_eq!(Reading { value: 0.0, ..decoded }, Reading { value: 0.0, ..reading });
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn corrupted_records_never_panic(reading in any_reading(), at in 0..ENCODED_LEN, byte in any::<u8>()) {
            let mut bytes = encode(&reading);
            bytes[at] = byte;
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn errors_say_why() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[9, 1, 2]), Err(DecodeError::UnsupportedVersion(9)));
        assert_eq!(decode(&[1, 1, 2]), Err(DecodeError::WrongLength { actual: 3 }));
        let mut bytes = [0u8; ENCODED_LEN];
        bytes[0] = VERSION;
        bytes[3..8].copy_from_slice(b"US-ZZ");
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownRegion("US-ZZ".into())));
    }
}
