//! The simulated fleet: customers, their meters and where they live.

use auth_core::region::REGIONS;
use auth_core::spec::SimulatorSpec;
use auth_core::registry::{Installation, MeterUnit, RegisterKind, Registry};
use auth_core::{CustomerKind, Region, Utility};

/// One meter of the fleet, with what the simulator needs to produce its readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meter {
    pub meter_id: u64,
    pub customer_id: u64,
    pub utility: Utility,
    pub region: Region,
    pub customer_kind: CustomerKind,
    /// Offset of this meter's readings within each heartbeat, ms.
    pub phase_ms: i64,
    /// Size of the household or business relative to the average (0.5 to 2.0).
    pub scale: f64,
}

/// A deterministic fleet: customer ids `1..=customers`, meter id
/// `customer_id * 4 + utility index`. Every customer has electricity and water;
/// a share has gas; regions follow population.
#[derive(Debug, Clone)]
pub struct Fleet {
    meters: Vec<Meter>,
    customers: u64,
}

impl Fleet {
    pub fn generate(spec: &SimulatorSpec) -> Self {
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let cumulative: Vec<u64> = REGIONS
            .iter()
            .scan(0u64, |total, row| {
                *total += u64::from(row.population);
                Some(*total)
            })
            .collect();
        let population = cumulative.last().copied().unwrap_or(1);
        let heartbeat_ms = i64::from(spec.heartbeat_secs.max(1)) * 1_000;
        let mut meters = Vec::with_capacity((spec.customers as usize).saturating_mul(3));
        for customer_id in 1..=spec.customers {
            let customer_kind =
                if rng.f64() < spec.business_share { CustomerKind::Business } else { CustomerKind::Residential };
            let pick = rng.u64(0..population);
            let region_index = cumulative.partition_point(|&bound| bound <= pick);
            let region = Region::from_index(region_index).unwrap_or_else(|| unreachable!("pick below the population"));
            let scale = 0.5 + 1.5 * rng.f64();
            let has_gas = rng.f64() < spec.gas_share;
            for utility in Utility::ALL {
                if utility == Utility::Gas && !has_gas {
                    continue;
                }
                meters.push(Meter {
                    meter_id: customer_id * 4 + utility.index() as u64,
                    customer_id,
                    utility,
                    region,
                    customer_kind,
                    phase_ms: rng.i64(0..heartbeat_ms),
                    scale,
                });
            }
        }
        Self { meters, customers: spec.customers }
    }

    pub fn meters(&self) -> &[Meter] {
        &self.meters
    }

    /// The fleet as a utility registers it: every meter installed since 2000
    /// at its customer's premise, counting in the utility's unit every
    /// `interval_secs`.
    pub fn installations(&self, interval_secs: u32) -> Vec<Installation> {
        self.meters
            .iter()
            .map(|meter| Installation {
                meter_id: meter.meter_id,
                customer_id: meter.customer_id,
                premise_id: format!("SIM-{}", meter.customer_id),
                region: meter.region,
                utility: meter.utility,
                customer_kind: meter.customer_kind,
                unit: MeterUnit::of(meter.utility),
                multiplier: 1.0,
                register: RegisterKind::Interval,
                interval_secs,
                valid_from_ms: auth_core::reading::EARLIEST_EVENT_MS,
                valid_to_ms: None,
                plausible_min: None,
                plausible_max: None,
                register_rollover: None,
            })
            .collect()
    }

    /// The registry of [`Fleet::installations`].
    pub fn registry(&self, interval_secs: u32) -> Registry {
        let mut registry = Registry::default();
        for installation in self.installations(interval_secs) {
            registry.set_meter(installation.meter_id, vec![installation]);
        }
        registry
    }

    /// Keeps only the meters for which `keep` holds.
    pub fn retain(&mut self, keep: impl FnMut(&Meter) -> bool) {
        self.meters.retain(keep);
    }

    pub fn customers(&self) -> u64 {
        self.customers
    }

    /// The customers' ids, `1..=customers`.
    pub fn customer_ids(&self) -> impl Iterator<Item = u64> {
        1..=self.customers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(customers: u64, seed: u64) -> SimulatorSpec {
        SimulatorSpec { customers, seed, ..SimulatorSpec::default() }
    }

    #[test]
    fn same_seed_same_fleet() {
        assert_eq!(Fleet::generate(&spec(500, 7)).meters(), Fleet::generate(&spec(500, 7)).meters());
        assert_ne!(Fleet::generate(&spec(500, 7)).meters(), Fleet::generate(&spec(500, 8)).meters());
    }

    #[test]
    fn fleet_follows_its_shares() {
        let fleet = Fleet::generate(&spec(20_000, 3));
        let electricity: Vec<&Meter> = fleet.meters().iter().filter(|m| m.utility == Utility::Electricity).collect();
        assert_eq!(electricity.len(), 20_000);
        let businesses = electricity.iter().filter(|m| m.customer_kind == CustomerKind::Business).count();
        assert!((1_700..2_300).contains(&businesses), "{businesses} businesses");
        let gas = fleet.meters().iter().filter(|m| m.utility == Utility::Gas).count();
        assert!((11_400..12_600).contains(&gas), "{gas} gas meters");
        let california = Region::from_code("US-CA").expect("California");
        let wyoming = Region::from_code("US-WY").expect("Wyoming");
        let in_region = |region| electricity.iter().filter(|m| m.region == region).count();
        assert!(in_region(california) > 20 * in_region(wyoming).max(1) / 2, "California outnumbers Wyoming");
    }
}
