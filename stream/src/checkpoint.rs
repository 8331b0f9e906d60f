//! Checkpoints: a partition's open-window state and its next offset in one blob.
//!
//! Layout: one version byte (`3`), then the state in `postcard` encoding. The
//! blob is written by the serving store in the same atomic step as the window
//! updates it follows, so state and offset always belong together. Version 2
//! (without cumulative meters' registers) and version 1 (one watermark per
//! partition) still decode: under version 1 each customer starts from its
//! partition's newest event time.

use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::window::{Bin, CustomerState, MeterSeen, PartitionCounts, PartitionWindows, RegionBin, RegionKey, WindowConfig};
use smallvec::SmallVec;

const VERSION: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint is empty")]
    Empty,
    #[error("checkpoint has version {0}, this build reads versions 1 to {VERSION}")]
    UnsupportedVersion(u8),
    #[error("checkpoint does not decode: {0}")]
    Corrupt(#[from] postcard::Error),
}

struct Slots<'a>(&'a [Option<CustomerState>]);

impl Serialize for Slots<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.iter().flatten().count()))?;
        for state in self.0.iter().flatten() {
            seq.serialize_element(state)?;
        }
        seq.end()
    }
}

struct Regions<'a>(&'a PartitionWindows);

impl Serialize for Regions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut regions: Vec<(RegionKey, &RegionBin)> = self.0.regions.iter().collect();
        regions.sort_by_key(|(key, _)| *key);
        serializer.collect_seq(regions)
    }
}

struct Snapshot<'a> {
    next_offset: u64,
    windows: &'a PartitionWindows,
}

impl Serialize for Snapshot<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut state = serializer.serialize_struct("Checkpoint", 7)?;
        state.serialize_field("next_offset", &self.next_offset)?;
        state.serialize_field("clock_ms", &self.windows.clock_ms)?;
        state.serialize_field("last_log_ms", &self.windows.last_log_ms)?;
        state.serialize_field("sizes_ms", &self.windows.config.sizes_ms)?;
        state.serialize_field("counts", &self.windows.counts)?;
        state.serialize_field("customers", &Slots(&self.windows.slots))?;
        state.serialize_field("regions", &Regions(self.windows))?;
        state.end()
    }
}

#[derive(Deserialize)]
struct Restored {
    next_offset: u64,
    clock_ms: Option<i64>,
    last_log_ms: i64,
    sizes_ms: Vec<i64>,
    counts: PartitionCounts,
    customers: Vec<CustomerState>,
    regions: Vec<(RegionKey, RegionBin)>,
}

/// Version 2: no registers.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct RestoredV2 {
    next_offset: u64,
    clock_ms: Option<i64>,
    last_log_ms: i64,
    sizes_ms: Vec<i64>,
    counts: PartitionCounts,
    customers: Vec<CustomerV2>,
    regions: Vec<(RegionKey, RegionBin)>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct CustomerV2 {
    customer_id: u64,
    region_index: u8,
    clock_ms: i64,
    last_log_ms: i64,
    bins: SmallVec<[Bin; 4]>,
    meters: SmallVec<[MeterSeenV2; 1]>,
}

/// A meter's state before version 3.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct MeterSeenV2 {
    meter_id: u64,
    base_ms: i64,
    seen: Vec<u32>,
}

fn upgrade_meters(meters: SmallVec<[MeterSeenV2; 1]>) -> SmallVec<[MeterSeen; 1]> {
    meters.into_iter().map(|meter| MeterSeen::without_register(meter.meter_id, meter.base_ms, meter.seen)).collect()
}

impl RestoredV2 {
    fn upgrade(self) -> Restored {
        Restored {
            next_offset: self.next_offset,
            clock_ms: self.clock_ms,
            last_log_ms: self.last_log_ms,
            sizes_ms: self.sizes_ms,
            counts: self.counts,
            customers: self
                .customers
                .into_iter()
                .map(|old| {
                    CustomerState::new(old.customer_id, old.region_index, old.clock_ms, old.last_log_ms)
                        .with_bins(old.bins, upgrade_meters(old.meters))
                })
                .collect(),
            regions: self.regions,
        }
    }
}

/// Version 1: one watermark per partition, fewer counters.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct RestoredV1 {
    next_offset: u64,
    max_event_ms: Option<i64>,
    sizes_ms: Vec<i64>,
    counts: CountsV1,
    customers: Vec<CustomerV1>,
    regions: Vec<(RegionKey, RegionBin)>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct CountsV1 {
    counted: u64,
    counted_late: u64,
    duplicates: u64,
    too_late: u64,
    malformed: u64,
    windows_emitted: u64,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct CustomerV1 {
    customer_id: u64,
    region_index: u8,
    bins: SmallVec<[Bin; 4]>,
    meters: SmallVec<[MeterSeenV2; 1]>,
}

impl RestoredV1 {
    fn upgrade(self) -> Restored {
        let clock_ms = self.max_event_ms.unwrap_or(i64::MIN);
        let CountsV1 { counted, counted_late, duplicates, too_late, malformed, windows_emitted } = self.counts;
        Restored {
            next_offset: self.next_offset,
            clock_ms: self.max_event_ms,
            last_log_ms: clock_ms,
            sizes_ms: self.sizes_ms,
            counts: PartitionCounts { counted, counted_late, duplicates, too_late, malformed, windows_emitted, ..Default::default() },
            customers: self
                .customers
                .into_iter()
                .map(|old| CustomerState::new(old.customer_id, old.region_index, clock_ms, clock_ms).with_bins(old.bins, upgrade_meters(old.meters)))
                .collect(),
            regions: self.regions,
        }
    }
}

/// What the previous checkpoint of a partition took, to size the next one's buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodedSize {
    pub bytes: usize,
    pub customers: usize,
}

impl EncodedSize {
    /// Bytes per customer assumed before a partition's first checkpoint.
    const FIRST_BYTES_PER_CUSTOMER: usize = 256;

    /// A buffer size the checkpoint of `customers` customers should fit in:
    /// the previous checkpoint scaled to today's customers, with room to
    /// spare. Regrowing a buffer of many megabytes copies it and faults in
    /// every page again; reserved pages that stay unused are never touched.
    fn capacity_for(self, customers: usize) -> usize {
        let per_customer = match self.bytes.checked_div(self.customers) {
            Some(per_customer) if per_customer > 0 => per_customer,
            _ => Self::FIRST_BYTES_PER_CUSTOMER,
        };
        let estimate = per_customer.saturating_mul(customers).max(self.bytes);
        estimate.saturating_add(estimate / 4).saturating_add(4_096)
    }
}

/// Encodes the state of a partition whose next record to read is `next_offset`.
/// `previous` (what the last checkpoint took) spares the buffer's regrowth.
pub fn encode(windows: &PartitionWindows, next_offset: u64, previous: EncodedSize) -> Result<(Vec<u8>, EncodedSize), CheckpointError> {
    let customers = windows.customers();
    let mut out = Vec::with_capacity(previous.capacity_for(customers));
    out.push(VERSION);
    let encoded = postcard::to_extend(&Snapshot { next_offset, windows }, out)?;
    let size = EncodedSize { bytes: encoded.len(), customers };
    Ok((encoded, size))
}

/// Decodes a checkpoint into fresh window state under `config`, returning it
/// with the offset to continue from. Bins of window sizes no longer configured
/// are dropped; new sizes start empty.
pub fn decode(
    bytes: &[u8],
    utility: auth_core::Utility,
    config: WindowConfig,
) -> Result<(PartitionWindows, u64), CheckpointError> {
    let (&version, body) = bytes.split_first().ok_or(CheckpointError::Empty)?;
    let restored: Restored = match version {
        VERSION => postcard::from_bytes(body)?,
        2 => postcard::from_bytes::<RestoredV2>(body)?.upgrade(),
        1 => postcard::from_bytes::<RestoredV1>(body)?.upgrade(),
        _ => return Err(CheckpointError::UnsupportedVersion(version)),
    };
    let remap: Vec<Option<u8>> = restored
        .sizes_ms
        .iter()
        .map(|size| config.sizes_ms.iter().position(|configured| configured == size).map(|index| index as u8))
        .collect();
    let mapped = |size_index: u8| remap.get(usize::from(size_index)).copied().flatten();
    let mut customers = restored.customers;
    for state in &mut customers {
        state.bins.retain(|bin| mapped(bin.size_index).is_some());
        for bin in &mut state.bins {
            bin.size_index = mapped(bin.size_index).unwrap_or_else(|| unreachable!("retained above"));
        }
    }
    customers.retain(|state| !state.bins.is_empty() || state.holds_register_since(i64::MIN));
    let regions = restored
        .regions
        .into_iter()
        .filter_map(|((region, size_index, start), bin)| mapped(size_index).map(|index| ((region, index, start), bin)))
        .collect();
    let mut windows = PartitionWindows::new(utility, config);
    windows.clock_ms = restored.clock_ms;
    windows.last_log_ms = restored.last_log_ms;
    windows.counts = restored.counts;
    windows.restore(customers, regions);
    Ok((windows, restored.next_offset))
}

#[cfg(test)]
mod tests {
    use auth_core::ports::WindowOwner;
    use auth_core::{CustomerKind, Reading, Region, Utility};

    use super::*;
    use crate::window::Outcome;

    const T0: i64 = 1_795_824_000_000;

    fn config() -> WindowConfig {
        WindowConfig {
            sizes_ms: vec![60_000, 86_400_000],
            out_of_orderness_ms: 10_000,
            allowed_lateness_ms: 60_000,
            region_lateness_ms: 3_600_000,
            idle_timeout_ms: 30_000,
        }
    }

    fn reading(customer_id: u64, ts_ms: i64) -> Reading {
        Reading {
            meter_id: customer_id,
            customer_id,
            utility: Utility::Gas,
            region: Region::from_code("US-CA").expect("California"),
            customer_kind: CustomerKind::Business,
            ts_ms,
            value: 1.0,
            cumulative: false,
        }
    }

    #[test]
    fn a_version_1_checkpoint_continues_with_its_partition_watermark_for_every_customer() {
        let mut windows = PartitionWindows::new(Utility::Gas, config());
        windows.add(&reading(1, T0 + 5_000), T0 + 6_000);
        windows.add(&reading(2, T0 + 200_000), T0 + 201_000);
        let (v2, _) = encode(&windows, 2, EncodedSize::default()).expect("encode");
        let (current, _) = decode(&v2, Utility::Gas, config()).expect("decode");
        let customers: Vec<CustomerV1> = current
            .slots
            .iter()
            .flatten()
            .map(|state| CustomerV1 {
                customer_id: state.customer_id,
                region_index: state.region_index,
                bins: state.bins.clone(),
                meters: meters_v2(&state.meters),
            })
            .collect();
        let v1 = RestoredV1 {
            next_offset: 2,
            max_event_ms: Some(T0 + 200_000),
            sizes_ms: vec![60_000, 86_400_000],
            counts: CountsV1 { counted: 2, counted_late: 0, duplicates: 0, too_late: 0, malformed: 0, windows_emitted: 0 },
            customers,
            regions: current.regions.iter().map(|(key, bin)| (key, *bin)).collect(),
        };
        let mut blob = vec![1];
        blob.extend(postcard::to_allocvec(&v1).expect("v1 encodes"));
        let (mut upgraded, next_offset) = decode(&blob, Utility::Gas, config()).expect("a version 1 checkpoint decodes");
        assert_eq!(next_offset, 2);
        assert_eq!(upgraded.counts().counted, 2);
        assert_eq!(upgraded.add(&reading(1, T0 + 1_000), T0 + 202_000), Outcome::TooLate, "as under version 1");
        assert_eq!(upgraded.add(&reading(1, T0 + 200_500), T0 + 202_000), Outcome::Counted);
        let minute_1 = upgraded.take_updates().into_iter().filter(|u| u.owner == WindowOwner::Customer(1)).count();
        assert!(minute_1 > 0);
    }

    fn meters_v2(meters: &[MeterSeen]) -> SmallVec<[MeterSeenV2; 1]> {
        meters.iter().map(|meter| MeterSeenV2 { meter_id: meter.meter_id, base_ms: meter.base_ms, seen: meter.seen.clone() }).collect()
    }

    #[test]
    fn a_version_2_checkpoint_continues_and_its_meters_start_without_registers() {
        let mut windows = PartitionWindows::new(Utility::Gas, config());
        windows.add(&reading(1, T0 + 5_000), T0 + 6_000);
        let (current, _) = decode(&encode(&windows, 1, EncodedSize::default()).expect("encode").0, Utility::Gas, config()).expect("decode");
        let v2 = RestoredV2 {
            next_offset: 1,
            clock_ms: current.clock_ms,
            last_log_ms: current.last_log_ms,
            sizes_ms: current.config.sizes_ms.clone(),
            counts: current.counts,
            customers: current
                .slots
                .iter()
                .flatten()
                .map(|state| CustomerV2 {
                    customer_id: state.customer_id,
                    region_index: state.region_index,
                    clock_ms: state.clock_ms,
                    last_log_ms: state.last_log_ms,
                    bins: state.bins.clone(),
                    meters: meters_v2(&state.meters),
                })
                .collect(),
            regions: current.regions.iter().map(|(key, bin)| (key, *bin)).collect(),
        };
        let mut blob = vec![2];
        blob.extend(postcard::to_allocvec(&v2).expect("v2 encodes"));
        let (mut upgraded, next_offset) = decode(&blob, Utility::Gas, config()).expect("a version 2 checkpoint decodes");
        assert_eq!(next_offset, 1);
        assert_eq!(upgraded.add(&reading(1, T0 + 5_000), T0 + 7_000), Outcome::Duplicate, "its seen times are kept");
        let register = Reading { meter_id: 9, value: 100.0, cumulative: true, ..reading(1, T0 + 6_000) };
        assert_eq!(upgraded.add(&register, T0 + 7_000), Outcome::Counted);
        assert_eq!(upgraded.add(&Reading { ts_ms: T0 + 7_000, value: 102.5, ..register }, T0 + 8_000), Outcome::Counted);
        let minute = upgraded.take_updates().into_iter().find(|update| update.owner == WindowOwner::Customer(1) && update.slot.width_ms == 60_000);
        assert_eq!(minute.map(|update| update.aggregate.sum), Some(1.0 + 2.5), "the first register counts nothing, the second its advance");
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        let err = decode(&[9, 0], Utility::Gas, config()).err().expect("refused");
        assert_eq!(err.to_string(), "checkpoint has version 9, this build reads versions 1 to 3");
    }
}
