//! The in-memory serving store.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;
use auth_core::ports::{
    Aggregate, PartitionFlush, PortError, RegionWindow, Result, ServingStore, StoredWindow, TopicPartition, WindowOwner,
    WindowSlot, WindowUpdate,
};
use auth_core::{Region, Utility};
use bytes::Bytes;
use rustc_hash::FxHashMap;

/// A serving store in process memory. It keeps, per customer (and per region),
/// utility and window size, the `recent_windows` newest windows; a region's
/// window is kept per contributing partition and merged when read.
pub struct MemoryStore {
    recent_windows: usize,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    customers: FxHashMap<u64, Series>,
    regions: HashMap<Region, BTreeMap<(Utility, WindowSlot), RegionParts>>,
    checkpoints: HashMap<TopicPartition, Bytes>,
    /// The last epoch claimed of each partition.
    epochs: HashMap<TopicPartition, u64>,
}

/// A region window's part from each partition: aggregate and whether it closed.
type RegionParts = BTreeMap<TopicPartition, (Aggregate, bool)>;

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
            match update.owner {
                WindowOwner::Customer(customer_id) => {
                    state.customers.entry(customer_id).or_default().upsert(update, self.recent_windows);
                }
                WindowOwner::Region(region) => {
                    let windows = state.regions.entry(region).or_default();
                    let parts = windows.entry((update.utility, update.slot)).or_default();
                    let new_window = parts.is_empty();
                    parts.insert(flush.partition.clone(), (update.aggregate, update.closed));
                    if new_window {
                        let width_ms = update.slot.width_ms;
                        let same_size = (update.utility, WindowSlot { width_ms, start_ms: i64::MIN })
                            ..=(update.utility, WindowSlot { width_ms, start_ms: i64::MAX });
                        let surplus = windows.range(same_size.clone()).count().saturating_sub(self.recent_windows);
                        let stale: Vec<(Utility, WindowSlot)> =
                            windows.range(same_size).take(surplus).map(|(key, _)| *key).collect();
                        for key in stale {
                            windows.remove(&key);
                        }
                    }
                }
            }
        }
        if let Some(checkpoint) = flush.checkpoint {
            state.checkpoints.insert(flush.partition, checkpoint);
        }
        Ok(())
    }

    async fn load_checkpoint(&self, partition: &TopicPartition) -> Result<Option<Bytes>> {
        Ok(self.read().checkpoints.get(partition).cloned())
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
}
