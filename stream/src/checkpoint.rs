//! Checkpoints: a partition's open-window state and its next offset in one blob.
//!
//! Layout: one version byte (`1`), then the state in `postcard` encoding. The
//! blob is written by the serving store in the same atomic step as the window
//! updates it follows, so state and offset always belong together.

use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::window::{CustomerState, PartitionCounts, PartitionWindows, RegionBin, RegionKey, WindowConfig};

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint is empty")]
    Empty,
    #[error("checkpoint has version {0}, this build reads version {VERSION}")]
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
        let mut state = serializer.serialize_struct("Checkpoint", 6)?;
        state.serialize_field("next_offset", &self.next_offset)?;
        state.serialize_field("max_event_ms", &self.windows.max_event_ms)?;
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
    max_event_ms: Option<i64>,
    sizes_ms: Vec<i64>,
    counts: PartitionCounts,
    customers: Vec<CustomerState>,
    regions: Vec<(RegionKey, RegionBin)>,
}

/// Encodes the state of a partition whose next record to read is `next_offset`.
/// `size_hint` (e.g. the previous checkpoint's size) spares the buffer's regrowth.
pub fn encode(windows: &PartitionWindows, next_offset: u64, size_hint: usize) -> Result<Vec<u8>, CheckpointError> {
    let mut out = Vec::with_capacity(size_hint + size_hint / 8 + 64);
    out.push(VERSION);
    Ok(postcard::to_extend(&Snapshot { next_offset, windows }, out)?)
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
    if version != VERSION {
        return Err(CheckpointError::UnsupportedVersion(version));
    }
    let restored: Restored = postcard::from_bytes(body)?;
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
    customers.retain(|state| !state.bins.is_empty());
    let regions = restored
        .regions
        .into_iter()
        .filter_map(|((region, size_index, start), bin)| mapped(size_index).map(|index| ((region, index, start), bin)))
        .collect();
    let mut windows = PartitionWindows::new(utility, config);
    windows.max_event_ms = restored.max_event_ms;
    windows.counts = restored.counts;
    windows.restore(customers, regions);
    Ok((windows, restored.next_offset))
}
