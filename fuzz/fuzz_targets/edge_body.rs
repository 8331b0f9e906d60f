//! Arbitrary bytes as a gateway request body, read as readings that say
//! whose they are and through a meter registry: parsing never panics, every
//! item is accounted for, and every accepted reading survives the log codec.
#![no_main]

use std::sync::OnceLock;

use auth_core::registry::{Installation, MeterUnit, RegisterKind, Registry};
use auth_core::{CustomerKind, Region, ReceiverClock, Utility, codec, edge};
use libfuzzer_sys::fuzz_target;

const CLOCK: ReceiverClock = ReceiverClock { now_ms: 1_795_824_000_000, max_ahead_ms: 300_000 };

/// Meters 0 to 99, one kWh meter of customer 1000 + id each, installed in 2020.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = Registry::default();
        for meter_id in 0..100 {
            let installation = Installation {
                meter_id,
                customer_id: 1_000 + meter_id,
                premise_id: format!("P-{meter_id}"),
                region: Region::from_code("US-CA").expect("a region of the table"),
                utility: Utility::Electricity,
                customer_kind: CustomerKind::Residential,
                unit: MeterUnit::KWh,
                multiplier: 1.0,
                register: RegisterKind::Interval,
                interval_secs: 900,
                valid_from_ms: 1_577_836_800_000,
                valid_to_ms: None,
                plausible_min: None,
                plausible_max: None,
                register_rollover: None,
            };
            registry.set_meter(meter_id, vec![installation]);
        }
        registry
    })
}

fuzz_target!(|body: &[u8]| {
    for registry in [None, Some(registry())] {
        let Ok(parsed) = edge::parse_body(body, CLOCK, 10_000, registry) else { return };
        assert!(parsed.refused.iter().all(|refused| !refused.reasons.is_empty()));
        for (_, reading) in &parsed.readings {
            let decoded = codec::decode(&codec::encode(reading)).expect("an accepted reading encodes");
            assert_eq!(decoded.meter_id, reading.meter_id);
            assert_eq!(decoded.value.to_bits(), reading.value.to_bits());
            assert!(reading.problems(Some(CLOCK)).is_empty(), "an accepted reading breaks no rule");
            if let Some(registry) = registry {
                let installation = registry.find(reading.meter_id, reading.ts_ms).expect("an accepted reading's meter is installed");
                assert_eq!(reading.customer_id, installation.customer_id, "the registry says whose it is");
            }
        }
    }
});
