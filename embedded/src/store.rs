//! The in-memory serving store.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;
use auth_core::ports::{
    Aggregate, MeterLastReading, PartitionFlush, PortError, RegionWindow, Restatement, Result, ServingStore, StoredWindow, StreamProgress, TopicPartition,
    WindowOwner, WindowSlot, WindowUpdate,
};
use auth_core::{Region, Utility};
use bytes::Bytes;
use rustc_hash::FxHashMap;

/// A serving store in process memory. It keeps, per customer (and per region),
/// utility and window size, the `recent_windows` newest windows; a region's
/// window is kept per contributing partition and merged when read, until the
/// batch restates it.
pub struct MemoryStore {
    recent_windows: usize,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    customers: FxHashMap<u64, Series>,
    regions: HashMap<Region, BTreeMap<(Utility, WindowSlot), RegionParts>>,
    checkpoints: HashMap<TopicPartition, (Bytes, StreamProgress)>,
    /// The last epoch claimed of each partition.
    epochs: HashMap<TopicPartition, u64>,
    /// The version of each restated window.
    restated: HashMap<(Utility, WindowSlot), u64>,
    /// Each meter's newest reading time: written at every checkpoint, read
    /// (and sorted) only when an operator asks for the silent meters.
    meter_last_reading: FxHashMap<u64, i64>,
}

/// Who wrote a part of a region's window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Partition(TopicPartition),
    /// The batch's restatement: the whole window.
    Restated,
}

/// A region window's parts: aggregate and whether it closed.
type RegionParts = BTreeMap<Part, (Aggregate, bool)>;

/// Sets one part of a region's window, keeping the newest `recent_windows` windows per utility and size.
fn set_region_part(
    windows: &mut BTreeMap<(Utility, WindowSlot), RegionParts>,
    utility: Utility,
    slot: WindowSlot,
    part: Part,
    value: (Aggregate, bool),
    recent_windows: usize,
) {
    let parts = windows.entry((utility, slot)).or_default();
    let new_window = parts.is_empty();
    parts.insert(part, value);
    if new_window {
        let width_ms = slot.width_ms;
        let same_size =
            (utility, WindowSlot { width_ms, start_ms: i64::MIN })..=(utility, WindowSlot { width_ms, start_ms: i64::MAX });
        let surplus = windows.range(same_size.clone()).count().saturating_sub(recent_windows);
        let stale: Vec<(Utility, WindowSlot)> = windows.range(same_size).take(surplus).map(|(key, _)| *key).collect();
        for key in stale {
            windows.remove(&key);
        }
    }
}

/// One customer's windows, ordered by utility, width and start.
#[derive(Default)]
struct Series {
    windows: Vec<StoredWindow>,
}

impl Series {
    fn upsert(&mut self, update: &WindowUpdate, recent_windows: usize) {
        let key = (update.utility, update.slot);
        let stored = StoredWindow { utility: update.utility, slot: update.slot, aggregate: update.aggregate, closed: update.closed };
        match self.windows.binary_search_by(|window| (window.utility, window.slot).cmp(&key)) {
            // A processor replaying from an older checkpoint emits a window
            // open again after it closed; the closed one is complete and stays.
            Ok(at) if self.windows[at].closed && !stored.closed => {}
            Ok(at) => self.windows[at] = stored,
            Err(at) => {
                self.windows.insert(at, stored);
                let size = (update.utility, update.slot.width_ms);
                let first = self.windows.partition_point(|window| (window.utility, window.slot.width_ms) < size);
                let end = self.windows.partition_point(|window| (window.utility, window.slot.width_ms) <= size);
                if end - first > recent_windows {
                    self.windows.drain(first..end - recent_windows);
                }
            }
        }
    }
}

impl MemoryStore {
    pub fn new(recent_windows: u32) -> Self {
        Self { recent_windows: recent_windows.max(1) as usize, state: RwLock::new(State::default()) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ServingStore for MemoryStore {
    async fn claim(&self, partition: &TopicPartition) -> Result<u64> {
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let epoch = state.epochs.entry(partition.clone()).or_default();
        *epoch += 1;
        Ok(*epoch)
    }

    async fn apply(&self, flush: PartitionFlush) -> Result<()> {
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(epoch) = flush.epoch {
            let current = state.epochs.get(&flush.partition).copied().unwrap_or(0);
            if current > epoch {
                return Err(PortError::Fenced { partition: flush.partition, epoch, current });
            }
        }
        for update in &flush.windows {
            if state.restated.contains_key(&(update.utility, update.slot)) {
                continue;
            }
            match update.owner {
                WindowOwner::Customer(customer_id) => {
                    state.customers.entry(customer_id).or_default().upsert(update, self.recent_windows);
                }
                WindowOwner::Region(region) => {
                    let windows = state.regions.entry(region).or_default();
                    let part = Part::Partition(flush.partition.clone());
                    set_region_part(windows, update.utility, update.slot, part, (update.aggregate, update.closed), self.recent_windows);
                }
            }
        }
        for meter in &flush.meters {
            let newest = state.meter_last_reading.entry(meter.meter_id).or_insert(meter.ts_ms);
            *newest = (*newest).max(meter.ts_ms);
        }
        if let Some(checkpoint) = flush.checkpoint {
            state.checkpoints.insert(flush.partition, (checkpoint.state, checkpoint.progress));
        }
        Ok(())
    }

    async fn restate(&self, restatement: Restatement) -> Result<()> {
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Restatement { utility, slot, version, customers, regions } = restatement;
        let current = state.restated.entry((utility, slot)).or_insert(version);
        if *current > version {
            return Err(PortError::Superseded { utility, slot, version, current: *current });
        }
        *current = version;
        for (customer_id, aggregate) in customers {
            let update = WindowUpdate { owner: WindowOwner::Customer(customer_id), utility, slot, aggregate, closed: true };
            state.customers.entry(customer_id).or_default().upsert(&update, self.recent_windows);
        }
        if !regions.is_empty() {
            for windows in state.regions.values_mut() {
                windows.remove(&(utility, slot));
            }
            for (region, aggregate) in regions {
                let windows = state.regions.entry(region).or_default();
                set_region_part(windows, utility, slot, Part::Restated, (aggregate, true), self.recent_windows);
            }
        }
        Ok(())
    }

    async fn load_checkpoint(&self, partition: &TopicPartition) -> Result<Option<Bytes>> {
        Ok(self.read().checkpoints.get(partition).map(|(state, _)| state.clone()))
    }

    async fn load_progress(&self, partition: &TopicPartition) -> Result<Option<StreamProgress>> {
        Ok(self.read().checkpoints.get(partition).map(|(_, progress)| *progress))
    }

    async fn customer_windows(&self, customer_id: u64) -> Result<Vec<StoredWindow>> {
        let state = self.read();
        let mut windows = state.customers.get(&customer_id).map(|series| series.windows.clone()).unwrap_or_default();
        windows.sort_by_key(|window| (window.slot.start_ms, window.slot.width_ms, window.utility));
        Ok(windows)
    }

    async fn region_windows(&self, width_ms: i64, since_ms: i64) -> Result<Vec<RegionWindow>> {
        let state = self.read();
        let mut merged = Vec::new();
        for (&region, windows) in &state.regions {
            for (&(utility, slot), partials) in windows {
                if slot.width_ms != width_ms || slot.start_ms < since_ms {
                    continue;
                }
                let mut parts = partials.values();
                let Some(&(mut aggregate, mut closed)) = parts.next() else { continue };
                for (partial, partial_closed) in parts {
                    aggregate.merge(partial);
                    closed &= partial_closed;
                }
                merged.push(RegionWindow { region, window: StoredWindow { utility, slot, aggregate, closed } });
            }
        }
        merged.sort_by_key(|window| (window.region, window.window.utility, window.window.slot));
        Ok(merged)
    }

    async fn known_customers(&self, limit: usize) -> Result<Vec<u64>> {
        let state = self.read();
        let mut ids: Vec<u64> = state.customers.keys().copied().collect();
        ids.sort_unstable();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn meters_silent_since(&self, before_ms: i64, skip: usize, limit: usize) -> Result<Vec<MeterLastReading>> {
        let mut silent: Vec<(i64, u64)> = self
            .read()
            .meter_last_reading
            .iter()
            .filter(|&(_, &ts_ms)| ts_ms < before_ms)
            .map(|(&meter_id, &ts_ms)| (ts_ms, meter_id))
            .collect();
        silent.sort_unstable();
        Ok(silent.into_iter().skip(skip).take(limit).map(|(ts_ms, meter_id)| MeterLastReading { meter_id, ts_ms }).collect())
    }
}
