//! Per-partition window state: tumbling bins per customer and per region,
//! duplicate detection, lateness, and the timers that close and purge bins.
//!
//! Everything here is driven by the partition's own watermark (its newest
//! event time minus the out-of-orderness bound). A customer's readings all
//! live in one partition, so every decision (duplicate, too late, which bin)
//! depends only on that partition's record order, and replaying a partition
//! from a checkpoint reproduces exactly the same windows.

use std::collections::BTreeMap;

use auth_core::ports::{Aggregate, WindowOwner, WindowSlot, WindowUpdate};
use auth_core::region::REGIONS;
use auth_core::{Reading, Region, Utility};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// Window sizes and time bounds of one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    /// Ascending; the smallest decides lateness for all sizes.
    pub sizes_ms: Vec<i64>,
    pub out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    /// Counted, into a window that had already been emitted (it is emitted again).
    CountedLate,
    /// Same meter and event time as a reading already counted.
    Duplicate,
    /// Its smallest window was purged: past the allowed lateness. It stays in
    /// the log for the daily batch.
    TooLate,
}

/// A compact aggregate (count in 32 bits) for state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Agg {
    sum: f64,
    min: f64,
    max: f64,
    count: u32,
}

impl Agg {
    fn of(value: f64) -> Self {
        Self { sum: value, min: value, max: value, count: 1 }
    }

    fn add(&mut self, value: f64) {
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.count += 1;
    }

    fn to_aggregate(self) -> Aggregate {
        Aggregate { sum: self.sum, count: u64::from(self.count), min: self.min, max: self.max }
    }
}

/// One open (or closed but still within lateness) window of one size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Bin {
    pub(crate) start_ms: i64,
    pub(crate) agg: Agg,
    pub(crate) size_index: u8,
    pub(crate) closed: bool,
    #[serde(skip)]
    pub(crate) dirty: bool,
}

/// Event times already counted for one meter, back to the point where any
/// older reading would be too late anyway. They are kept as ascending 4-byte
/// offsets from `base_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MeterSeen {
    pub(crate) meter_id: u64,
    base_ms: i64,
    seen: Vec<u32>,
}

impl MeterSeen {
    fn new(meter_id: u64, ts_ms: i64) -> Self {
        Self { meter_id, base_ms: ts_ms, seen: vec![0] }
    }

    fn absolute(&self) -> impl Iterator<Item = i64> + '_ {
        self.seen.iter().map(|&offset| self.base_ms + i64::from(offset))
    }

    /// Re-expresses the kept times from a base at or below `ts_ms`, dropping
    /// any that lie more than the offset range (49 days) before it.
    fn rebase(&mut self, ts_ms: i64) {
        let oldest_kept = ts_ms - i64::from(u32::MAX);
        let kept: Vec<i64> = self.absolute().filter(|&seen| seen >= oldest_kept).collect();
        self.base_ms = kept.first().copied().unwrap_or(ts_ms).min(ts_ms);
        self.seen = kept.into_iter().map(|seen| (seen - self.base_ms) as u32).collect();
    }

    /// Records `ts_ms` and forgets times before `forget_before_ms`; false if
    /// `ts_ms` was already there.
    fn insert(&mut self, ts_ms: i64, forget_before_ms: i64) -> bool {
        if let Some(&oldest) = self.seen.first()
            && self.base_ms + i64::from(oldest) < forget_before_ms
        {
            let cut = forget_before_ms - self.base_ms;
            let keep_from = self.seen.partition_point(|&offset| i64::from(offset) < cut);
            self.seen.drain(..keep_from);
        }
        if !(0..=i64::from(u32::MAX)).contains(&(ts_ms - self.base_ms)) {
            self.rebase(ts_ms);
        }
        let offset = (ts_ms - self.base_ms) as u32;
        match self.seen.last() {
            Some(&last) if offset > last => self.seen.push(offset),
            None => self.seen.push(offset),
            Some(_) => match self.seen.binary_search(&offset) {
                Ok(_) => return false,
                Err(at) => self.seen.insert(at, offset),
            },
        }
        true
    }

    fn heap_bytes(&self) -> usize {
        self.seen.capacity() * size_of::<u32>()
    }
}

/// State of one customer in one partition (so: one utility).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CustomerState {
    pub(crate) customer_id: u64,
    pub(crate) region_index: u8,
    pub(crate) bins: SmallVec<[Bin; 4]>,
    pub(crate) meters: SmallVec<[MeterSeen; 1]>,
    #[serde(skip)]
    pub(crate) dirty: bool,
}

/// A region's bin as this partition sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct RegionBin {
    pub(crate) agg: Agg,
    pub(crate) closed: bool,
    #[serde(skip)]
    pub(crate) dirty: bool,
}

/// (region index, size index, start) of a region bin.
pub(crate) type RegionKey = (u8, u8, i64);

/// A partition's region bins, addressed by (size, region) without hashing:
/// each cell holds the few starts open for that size and region.
pub(crate) struct RegionBins {
    cells: Vec<SmallVec<[(i64, RegionBin); 2]>>,
}

impl RegionBins {
    fn new(sizes: usize) -> Self {
        Self { cells: vec![SmallVec::new(); sizes * REGIONS.len()] }
    }

    fn cell(size_index: u8, region_index: u8) -> usize {
        usize::from(size_index) * REGIONS.len() + usize::from(region_index)
    }

    fn get_or_insert(&mut self, (region_index, size_index, start_ms): RegionKey, closed: bool) -> &mut RegionBin {
        let cell = &mut self.cells[Self::cell(size_index, region_index)];
        let at = match cell.iter().position(|(start, _)| *start == start_ms) {
            Some(at) => at,
            None => {
                let empty = Agg { sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, count: 0 };
                cell.push((start_ms, RegionBin { agg: empty, closed, dirty: true }));
                cell.len() - 1
            }
        };
        &mut cell[at].1
    }

    fn insert(&mut self, (region_index, size_index, start_ms): RegionKey, bin: RegionBin) {
        if let Some(cell) = self.cells.get_mut(Self::cell(size_index, region_index)) {
            cell.push((start_ms, bin));
        }
    }

    fn key(cell: usize, start_ms: i64) -> RegionKey {
        ((cell % REGIONS.len()) as u8, (cell / REGIONS.len()) as u8, start_ms)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (RegionKey, &RegionBin)> {
        self.cells
            .iter()
            .enumerate()
            .flat_map(|(cell, bins)| bins.iter().map(move |(start, bin)| (Self::key(cell, *start), bin)))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (RegionKey, &mut RegionBin)> {
        self.cells
            .iter_mut()
            .enumerate()
            .flat_map(|(cell, bins)| bins.iter_mut().map(move |(start, bin)| (Self::key(cell, *start), bin)))
    }

    fn retain(&mut self, mut keep: impl FnMut(RegionKey, &RegionBin) -> bool) {
        for (cell, bins) in self.cells.iter_mut().enumerate() {
            bins.retain(|(start, bin)| keep(Self::key(cell, *start), bin));
        }
    }
}

pub use auth_core::ports::PartitionCounts;

/// The windows of one log partition.
pub struct PartitionWindows {
    pub(crate) utility: Utility,
    pub(crate) config: WindowConfig,
    pub(crate) max_event_ms: Option<i64>,
    pub(crate) slots: Vec<Option<CustomerState>>,
    free_slots: Vec<u32>,
    index: FxHashMap<u64, u32>,
    /// Slot of the previous reading.
    last_slot: u32,
    pub(crate) regions: RegionBins,
    /// Bin end -> slots with a bin ending there.
    close_at: BTreeMap<i64, Vec<u32>>,
    /// Bin end + allowed lateness -> slots with a bin to purge then.
    purge_at: BTreeMap<i64, Vec<u32>>,
    next_due_ms: i64,
    dirty_slots: Vec<u32>,
    /// Updates of bins purged before the next flush took them.
    pending: Vec<WindowUpdate>,
    pub(crate) counts: PartitionCounts,
}

impl PartitionWindows {
    pub fn new(utility: Utility, config: WindowConfig) -> Self {
        let regions = RegionBins::new(config.sizes_ms.len());
        Self {
            utility,
            config,
            max_event_ms: None,
            slots: Vec::new(),
            free_slots: Vec::new(),
            index: FxHashMap::default(),
            last_slot: u32::MAX,
            regions,
            close_at: BTreeMap::new(),
            purge_at: BTreeMap::new(),
            next_due_ms: i64::MAX,
            dirty_slots: Vec::new(),
            pending: Vec::new(),
            counts: PartitionCounts::default(),
        }
    }

    /// Newest event time minus the out-of-orderness bound; `None` before the first reading.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.max_event_ms.map(|max| max - self.config.out_of_orderness_ms)
    }

    pub fn counts(&self) -> PartitionCounts {
        self.counts
    }

    /// Open (customer, window) pairs held, closed-but-within-lateness ones included.
    pub fn open_windows(&self) -> usize {
        self.slots.iter().flatten().map(|state| state.bins.len()).sum()
    }

    /// Bytes this state holds on the heap, by its own accounting (without
    /// the allocator's overhead).
    pub fn heap_bytes(&self) -> usize {
        let customers: usize = self
            .slots
            .iter()
            .flatten()
            .map(|state| {
                let bins = if state.bins.spilled() { state.bins.capacity() * size_of::<Bin>() } else { 0 };
                let meters = if state.meters.spilled() { state.meters.capacity() * size_of::<MeterSeen>() } else { 0 };
                bins + meters + state.meters.iter().map(MeterSeen::heap_bytes).sum::<usize>()
            })
            .sum();
        let timers: usize =
            self.close_at.values().chain(self.purge_at.values()).map(|slots| slots.capacity() * size_of::<u32>()).sum();
        let regions: usize = self.regions.cells.iter().map(|cell| size_of_val(cell) + if cell.spilled() { cell.capacity() * size_of::<(i64, RegionBin)>() } else { 0 }).sum();
        self.slots.capacity() * size_of::<Option<CustomerState>>()
            + self.index.capacity() * (size_of::<(u64, u32)>() + 1)
            + (self.free_slots.capacity() + self.dirty_slots.capacity()) * size_of::<u32>()
            + customers
            + timers
            + regions
    }

    pub(crate) fn count_malformed(&mut self) {
        self.counts.malformed += 1;
    }

    /// Counts one reading of this partition's utility.
    pub fn add(&mut self, reading: &Reading) -> Outcome {
        let ts_ms = reading.ts_ms;
        let watermark = self.watermark_ms().unwrap_or(i64::MIN);
        let smallest = self.config.sizes_ms[0];
        let lateness = self.config.allowed_lateness_ms;
        let smallest_end = ts_ms - ts_ms.rem_euclid(smallest) + smallest;
        if smallest_end.saturating_add(lateness) <= watermark {
            self.counts.too_late += 1;
            return Outcome::TooLate;
        }
        let slot = self.slot_of(reading);
        let state = self.slots[slot as usize].as_mut().unwrap_or_else(|| unreachable!("slot_of returns a live slot"));
        let forget_before = watermark.saturating_sub(lateness + smallest);
        let fresh = match state.meters.iter_mut().find(|meter| meter.meter_id == reading.meter_id) {
            Some(meter) => meter.insert(ts_ms, forget_before),
            None => {
                state.meters.push(MeterSeen::new(reading.meter_id, ts_ms));
                true
            }
        };
        if !fresh {
            self.counts.duplicates += 1;
            return Outcome::Duplicate;
        }
        let mut late = false;
        for (size_index, &size) in self.config.sizes_ms.iter().enumerate() {
            let start_ms = ts_ms - ts_ms.rem_euclid(size);
            let size_index = size_index as u8;
            match state.bins.iter_mut().find(|bin| bin.size_index == size_index && bin.start_ms == start_ms) {
                Some(bin) => {
                    bin.agg.add(reading.value);
                    bin.dirty = true;
                    late |= bin.closed;
                }
                None => {
                    state.bins.push(Bin { start_ms, agg: Agg::of(reading.value), size_index, closed: false, dirty: true });
                    let end = start_ms + size;
                    self.close_at.entry(end).or_default().push(slot);
                    self.purge_at.entry(end + lateness).or_default().push(slot);
                    self.next_due_ms = self.next_due_ms.min(end);
                }
            }
            let key = (reading.region.index() as u8, size_index, start_ms);
            let region_closed = end_passed(start_ms + size, watermark);
            let region = self.regions.get_or_insert(key, region_closed);
            region.agg.add(reading.value);
            region.dirty = true;
        }
        if !state.dirty {
            state.dirty = true;
            self.dirty_slots.push(slot);
        }
        if self.max_event_ms.is_none_or(|max| ts_ms > max) {
            self.max_event_ms = Some(ts_ms);
            if ts_ms - self.config.out_of_orderness_ms >= self.next_due_ms {
                self.fire_timers();
            }
        }
        if late {
            self.counts.counted_late += 1;
            Outcome::CountedLate
        } else {
            self.counts.counted += 1;
            Outcome::Counted
        }
    }

    fn slot_of(&mut self, reading: &Reading) -> u32 {
        // Meters report at a fixed phase of their heartbeat, so a partition's
        // customers come in the same order heartbeat after heartbeat, the order
        // their slots were made in: the slot after the last one is a cheap,
        // usually right guess that spares a hash lookup.
        let guess = self.last_slot.wrapping_add(1);
        if let Some(Some(state)) = self.slots.get(guess as usize)
            && state.customer_id == reading.customer_id
        {
            self.last_slot = guess;
            return guess;
        }
        if let Some(&slot) = self.index.get(&reading.customer_id) {
            self.last_slot = slot;
            return slot;
        }
        let state = CustomerState {
            customer_id: reading.customer_id,
            region_index: reading.region.index() as u8,
            bins: SmallVec::new(),
            meters: SmallVec::new(),
            dirty: false,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(state);
                slot
            }
            None => {
                self.slots.push(Some(state));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(reading.customer_id, slot);
        self.last_slot = slot;
        slot
    }

    /// Closes every bin whose end the watermark passed and purges every bin
    /// past its allowed lateness.
    fn fire_timers(&mut self) {
        let Some(watermark) = self.watermark_ms() else { return };
        let lateness = self.config.allowed_lateness_ms;
        while let Some(entry) = self.close_at.first_entry() {
            if !end_passed(*entry.key(), watermark) {
                break;
            }
            let (end, slots) = entry.remove_entry();
            for slot in slots {
                let Some(state) = self.slots[slot as usize].as_mut() else { continue };
                for bin in state.bins.iter_mut() {
                    if !bin.closed && bin.start_ms + self.config.sizes_ms[usize::from(bin.size_index)] == end {
                        bin.closed = true;
                        bin.dirty = true;
                        self.counts.windows_emitted += 1;
                        if !state.dirty {
                            state.dirty = true;
                            self.dirty_slots.push(slot);
                        }
                    }
                }
            }
        }
        while let Some(entry) = self.purge_at.first_entry() {
            if !end_passed(*entry.key(), watermark) {
                break;
            }
            let slots = entry.remove();
            for slot in slots {
                self.purge_slot(slot, watermark);
            }
        }
        for ((_, size_index, start_ms), bin) in self.regions.iter_mut() {
            if !bin.closed && end_passed(start_ms + self.config.sizes_ms[usize::from(size_index)], watermark) {
                bin.closed = true;
                bin.dirty = true;
            }
        }
        let sizes = &self.config.sizes_ms;
        let mut purged_regions = Vec::new();
        self.regions.retain(|(region_index, size_index, start_ms), bin| {
            let keep = !end_passed(start_ms + sizes[usize::from(size_index)] + lateness, watermark);
            if !keep && bin.dirty {
                purged_regions.push(((region_index, size_index, start_ms), *bin));
            }
            keep
        });
        for (key, bin) in purged_regions {
            self.pending.push(region_update(self.utility, &self.config, key, &bin));
        }
        self.next_due_ms = self.close_at.keys().next().copied().unwrap_or(i64::MAX);
    }

    fn purge_slot(&mut self, slot: u32, watermark: i64) {
        let Some(state) = self.slots[slot as usize].as_mut() else { return };
        let sizes = &self.config.sizes_ms;
        let lateness = self.config.allowed_lateness_ms;
        let (utility, customer_id) = (self.utility, state.customer_id);
        let pending = &mut self.pending;
        state.bins.retain(|bin| {
            let keep = !end_passed(bin.start_ms + sizes[usize::from(bin.size_index)] + lateness, watermark);
            if !keep && bin.dirty {
                pending.push(customer_update(utility, sizes, customer_id, bin));
            }
            keep
        });
        if state.bins.spilled() && state.bins.len() <= state.bins.inline_size() {
            // Bins spill to the heap briefly around window boundaries; back inline, they cost nothing extra.
            state.bins.shrink_to_fit();
        }
        if state.bins.is_empty() {
            self.index.remove(&state.customer_id);
            self.slots[slot as usize] = None;
            self.free_slots.push(slot);
        }
    }

    /// Takes every window changed since the last call, as whole-window upserts.
    pub fn take_updates(&mut self) -> Vec<WindowUpdate> {
        let mut updates = std::mem::take(&mut self.pending);
        let sizes = &self.config.sizes_ms;
        for slot in self.dirty_slots.drain(..) {
            let Some(state) = self.slots[slot as usize].as_mut() else { continue };
            state.dirty = false;
            for bin in state.bins.iter_mut().filter(|bin| bin.dirty) {
                bin.dirty = false;
                updates.push(customer_update(self.utility, sizes, state.customer_id, bin));
            }
        }
        for (key, bin) in self.regions.iter_mut().filter(|(_, bin)| bin.dirty) {
            bin.dirty = false;
            updates.push(region_update(self.utility, &self.config, key, bin));
        }
        updates
    }

    /// Rebuilds indexes and timers after state was restored from a checkpoint.
    pub(crate) fn restore(&mut self, customers: Vec<CustomerState>, regions: Vec<(RegionKey, RegionBin)>) {
        let lateness = self.config.allowed_lateness_ms;
        for state in customers {
            let slot = self.slots.len() as u32;
            for bin in &state.bins {
                let end = bin.start_ms + self.config.sizes_ms[usize::from(bin.size_index)];
                if !bin.closed {
                    self.close_at.entry(end).or_default().push(slot);
                }
                self.purge_at.entry(end + lateness).or_default().push(slot);
            }
            self.index.insert(state.customer_id, slot);
            self.slots.push(Some(state));
        }
        for (key, bin) in regions {
            self.regions.insert(key, bin);
        }
        self.next_due_ms = self.close_at.keys().next().copied().unwrap_or(i64::MAX);
    }
}

fn end_passed(end_ms: i64, watermark: i64) -> bool {
    end_ms <= watermark
}

fn customer_update(utility: Utility, sizes: &[i64], customer_id: u64, bin: &Bin) -> WindowUpdate {
    WindowUpdate {
        owner: WindowOwner::Customer(customer_id),
        utility,
        slot: WindowSlot { width_ms: sizes[usize::from(bin.size_index)], start_ms: bin.start_ms },
        aggregate: bin.agg.to_aggregate(),
        closed: bin.closed,
    }
}

fn region_update(utility: Utility, config: &WindowConfig, key: RegionKey, bin: &RegionBin) -> WindowUpdate {
    let (region_index, size_index, start_ms) = key;
    let region = Region::from_index(usize::from(region_index)).unwrap_or_else(|| unreachable!("region indexes come from regions"));
    WindowUpdate {
        owner: WindowOwner::Region(region),
        utility,
        slot: WindowSlot { width_ms: config.sizes_ms[usize::from(size_index)], start_ms },
        aggregate: bin.agg.to_aggregate(),
        closed: bin.closed,
    }
}

#[cfg(test)]
mod tests {
    use auth_core::CustomerKind;

    use super::*;

    const MINUTE: i64 = 60_000;
    /// 2026-11-28T00:00:00Z.
    const T0: i64 = 1_795_824_000_000;

    fn config() -> WindowConfig {
        WindowConfig { sizes_ms: vec![MINUTE, 3_600_000, 86_400_000], out_of_orderness_ms: 10_000, allowed_lateness_ms: MINUTE }
    }

    fn reading(customer_id: u64, ts_ms: i64, value: f64) -> Reading {
        Reading {
            meter_id: customer_id * 4,
            customer_id,
            utility: Utility::Electricity,
            region: Region::from_code("US-NY").expect("New York"),
            customer_kind: CustomerKind::Residential,
            ts_ms,
            value,
        }
    }

    fn minute_windows(updates: &[WindowUpdate], owner: WindowOwner) -> Vec<(i64, f64, u64, bool)> {
        let mut found: Vec<(i64, f64, u64, bool)> = updates
            .iter()
            .filter(|update| update.owner == owner && update.slot.width_ms == MINUTE)
            .map(|update| ((update.slot.start_ms - T0) / MINUTE, update.aggregate.sum, update.aggregate.count, update.closed))
            .collect();
        found.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        found
    }

    #[test]
    fn in_order_disorder_duplicates_and_lateness() {
        let mut windows = PartitionWindows::new(Utility::Electricity, config());
        let outcomes: Vec<Outcome> = [
            reading(1, T0 + 5_000, 1.0),
            reading(1, T0 + 50_000, 2.0),
            reading(1, T0 + 40_000, 4.0),          // out of order, within the bound
            reading(1, T0 + 50_000, 2.0),          // redelivered: counted once
            reading(1, T0 + 75_000, 8.0),          // watermark 65 s: minute 0 closes
            reading(1, T0 + 30_000, 16.0),         // minute 0 closed but within lateness: re-emitted
            reading(1, T0 + 135_000, 32.0),        // watermark 125 s: minute 0 purged (end 60 s + 60 s)
            reading(1, T0 + 59_000, 64.0),         // too late
        ]
        .iter()
        .map(|r| windows.add(r))
        .collect();
        use Outcome::*;
        assert_eq!(outcomes, vec![Counted, Counted, Counted, Duplicate, Counted, CountedLate, Counted, TooLate]);
        let updates = windows.take_updates();
        let customer = WindowOwner::Customer(1);
        assert_eq!(
            minute_windows(&updates, customer),
            vec![(0, 23.0, 4, true), (1, 8.0, 1, true), (2, 32.0, 1, false)],
        );
        let region = WindowOwner::Region(Region::from_code("US-NY").expect("New York"));
        assert_eq!(minute_windows(&updates, region), minute_windows(&updates, customer));
        let day = updates
            .iter()
            .find(|u| u.owner == customer && u.slot.width_ms == 86_400_000)
            .expect("day window");
        assert_eq!(day.aggregate, Aggregate { sum: 63.0, count: 6, min: 1.0, max: 32.0 });
        let counts = windows.counts();
        assert_eq!((counts.counted, counts.counted_late, counts.duplicates, counts.too_late), (5, 1, 1, 1));
        assert_eq!(counts.windows_emitted, 2, "minutes 0 and 1 closed");
        assert!(windows.take_updates().is_empty(), "nothing changed since");
    }

    #[test]
    fn seen_times_survive_rebasing_and_are_forgotten_in_order() {
        let mut meter = MeterSeen::new(1, T0);
        assert!(meter.insert(T0 + 5_000, i64::MIN));
        assert!(meter.insert(T0 - 5_000, i64::MIN), "earlier than the base: rebased");
        assert!(!meter.insert(T0, i64::MIN), "still known after the rebase");
        assert!(!meter.insert(T0 - 5_000, i64::MIN));
        assert_eq!(meter.absolute().collect::<Vec<_>>(), vec![T0 - 5_000, T0, T0 + 5_000]);
        let far = T0 + 60 * 86_400_000;
        assert!(meter.insert(far, i64::MIN), "beyond the offset range: old times are dropped");
        assert_eq!(meter.absolute().collect::<Vec<_>>(), vec![far]);
        assert!(meter.insert(far + 10, far + 1));
        assert_eq!(meter.absolute().collect::<Vec<_>>(), vec![far + 10]);
    }

    #[test]
    fn purged_customers_free_their_state_and_updates_are_not_lost() {
        let mut windows = PartitionWindows::new(Utility::Electricity, WindowConfig { sizes_ms: vec![MINUTE], ..config() });
        windows.add(&reading(1, T0, 1.0));
        windows.add(&reading(2, T0 + 10 * MINUTE, 1.0));
        let updates = windows.take_updates();
        assert_eq!(minute_windows(&updates, WindowOwner::Customer(1)), vec![(0, 1.0, 1, true)], "emitted when purged");
        assert_eq!(windows.open_windows(), 1, "customer 1's state is gone");
        windows.add(&reading(3, T0 + 10 * MINUTE, 1.0));
        assert_eq!(windows.slots.len(), 2, "the freed slot is reused");
    }

    #[test]
    fn a_checkpoint_survives_a_change_of_window_sizes() {
        let mut windows = PartitionWindows::new(Utility::Electricity, config());
        windows.add(&reading(1, T0 + 5_000, 1.0));
        let blob = crate::checkpoint::encode(&windows, 1, 0).expect("encode");
        let five_minutes = WindowConfig { sizes_ms: vec![300_000, 86_400_000], ..config() };
        let (mut resumed, _) = crate::checkpoint::decode(&blob, Utility::Electricity, five_minutes).expect("decode");
        resumed.add(&reading(1, T0 + 10_000, 2.0));
        let updates = resumed.take_updates();
        let sums = |width: i64| {
            updates
                .iter()
                .filter(|u| u.owner == WindowOwner::Customer(1) && u.slot.width_ms == width)
                .map(|u| u.aggregate.sum)
                .collect::<Vec<_>>()
        };
        assert_eq!(sums(86_400_000), vec![3.0], "the kept size continues");
        assert_eq!(sums(300_000), vec![2.0], "the new size starts empty");
        assert!(sums(MINUTE).is_empty(), "the dropped size is gone");
    }

    #[test]
    fn checkpoint_round_trip_continues_identically() {
        let input: Vec<Reading> = (0..400)
            .map(|i| reading(1 + i % 7, T0 + (i as i64) * 2_000 - (i as i64 % 5) * 3_000, f64::from(i as u32 % 11)))
            .collect();
        let mut straight = PartitionWindows::new(Utility::Electricity, config());
        let mut straight_updates = Vec::new();
        for r in &input {
            straight.add(r);
        }
        straight_updates.extend(straight.take_updates());
        let mut first = PartitionWindows::new(Utility::Electricity, config());
        for r in &input[..150] {
            first.add(r);
        }
        let mut resumed_updates = first.take_updates();
        let blob = crate::checkpoint::encode(&first, 150, 0).expect("encode");
        let (mut resumed, offset) = crate::checkpoint::decode(&blob, Utility::Electricity, config()).expect("decode");
        assert_eq!(offset, 150);
        for r in &input[150..] {
            resumed.add(r);
        }
        resumed_updates.extend(resumed.take_updates());
        let latest = |updates: &[WindowUpdate]| {
            let mut last: BTreeMap<(WindowOwner, WindowSlot), (u64, u64, bool)> = BTreeMap::new();
            for u in updates {
                last.insert((u.owner, u.slot), (u.aggregate.sum.to_bits(), u.aggregate.count, u.closed));
            }
            last
        };
        assert_eq!(latest(&resumed_updates), latest(&straight_updates));
        assert_eq!(resumed.counts(), straight.counts());
    }
}
