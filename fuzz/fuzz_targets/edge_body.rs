//! Arbitrary bytes as a gateway request body: parsing never panics, every
//! item is accounted for, and every accepted reading survives the log codec.
#![no_main]

use auth_core::{ReceiverClock, codec, edge};
use libfuzzer_sys::fuzz_target;

const CLOCK: ReceiverClock = ReceiverClock { now_ms: 1_795_824_000_000, max_ahead_ms: 300_000 };

fuzz_target!(|body: &[u8]| {
    let Ok(parsed) = edge::parse_body(body, CLOCK, 10_000) else { return };
    assert!(parsed.refused.iter().all(|refused| !refused.reasons.is_empty()));
    for (_, reading) in &parsed.readings {
        let decoded = codec::decode(&codec::encode(reading)).expect("an accepted reading encodes");
        assert_eq!(decoded.meter_id, reading.meter_id);
        assert_eq!(decoded.value.to_bits(), reading.value.to_bits());
        assert!(reading.problems(Some(CLOCK)).is_empty(), "an accepted reading breaks no rule");
    }
});
