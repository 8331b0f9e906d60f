//! The in-memory serving store.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;
use auth_core::ports::{
    Aggregate, PartitionFlush, RegionWindow, Result, ServingStore, StoredWindow, TopicPartition, WindowOwner,
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
    async fn apply(&self, flush: PartitionFlush) -> Result<()> {
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn update(owner: WindowOwner, start_ms: i64, sum: f64) -> WindowUpdate {
        WindowUpdate {
            owner,
            utility: Utility::Water,
            slot: WindowSlot { width_ms: 60_000, start_ms },
            aggregate: Aggregate::of(sum),
            closed: false,
        }
    }

    fn flush(partition: u32, windows: Vec<WindowUpdate>, checkpoint: Option<&'static [u8]>) -> PartitionFlush {
        PartitionFlush {
            partition: TopicPartition::new("p.water", partition),
            windows,
            checkpoint: checkpoint.map(Bytes::from_static),
        }
    }

    #[tokio::test]
    async fn upserts_keep_the_newest_windows() {
        let store = MemoryStore::new(2);
        let customer = WindowOwner::Customer(9);
        for start in [0, 60_000, 120_000] {
            store.apply(flush(0, vec![update(customer, start, 1.0)], None)).await.expect("apply");
        }
        store.apply(flush(0, vec![update(customer, 120_000, 5.0)], Some(b"cp"))).await.expect("apply");
        let windows = store.customer_windows(9).await.expect("read");
        let starts: Vec<(i64, f64)> = windows.iter().map(|w| (w.slot.start_ms, w.aggregate.sum)).collect();
        assert_eq!(starts, vec![(60_000, 1.0), (120_000, 5.0)]);
        let checkpoint = store.load_checkpoint(&TopicPartition::new("p.water", 0)).await.expect("load");
        assert_eq!(checkpoint.as_deref(), Some(&b"cp"[..]));
        assert_eq!(store.known_customers(10).await.expect("ids"), vec![9]);
    }

    #[tokio::test]
    async fn region_partials_merge_over_partitions_and_rewrites_do_not_double() {
        let store = MemoryStore::new(10);
        let region = WindowOwner::Region(Region::from_code("US-TX").expect("Texas"));
        store.apply(flush(0, vec![update(region, 0, 2.0)], None)).await.expect("apply");
        store.apply(flush(1, vec![update(region, 0, 3.0)], None)).await.expect("apply");
        store.apply(flush(1, vec![update(region, 0, 3.0)], None)).await.expect("apply");
        let windows = store.region_windows(60_000, 0).await.expect("read");
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].window.aggregate, Aggregate { sum: 5.0, count: 2, min: 2.0, max: 3.0 });
        assert!(store.region_windows(3_600_000, 0).await.expect("read").is_empty());
    }

    #[tokio::test]
    async fn regions_keep_the_newest_windows_per_size() {
        let store = MemoryStore::new(2);
        let region = WindowOwner::Region(Region::from_code("US-TX").expect("Texas"));
        for start in [0, 60_000, 120_000] {
            store.apply(flush(0, vec![update(region, start, 1.0)], None)).await.expect("apply");
        }
        store.apply(flush(1, vec![update(region, 120_000, 2.0)], None)).await.expect("apply");
        let starts: Vec<(i64, f64)> = store
            .region_windows(60_000, 0)
            .await
            .expect("read")
            .iter()
            .map(|w| (w.window.slot.start_ms, w.window.aggregate.sum))
            .collect();
        assert_eq!(starts, vec![(60_000, 1.0), (120_000, 3.0)]);
    }
}
