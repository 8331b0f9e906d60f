//! Per-partition window state: tumbling bins per customer and per region,
//! duplicate detection, lateness, and when bins close and are purged.
//!
//! Event time is kept per customer (the partition key, so a customer's
//! readings are in log order in one partition), each reading's event time
//! capped at the log time it arrived at. A customer's windows close and are
//! purged on its own watermark, so a meter's wrong clock or a concentrator's
//! late upload moves no other customer's windows; region windows and the
//! end of a day follow the partition's watermark, the newest capped event
//! time of any customer. Every decision depends only on the partition's
//! records (their order and log times), so replaying a partition from a
//! checkpoint reproduces exactly the same windows. The one exception is a
//! partition that receives nothing at all: [`PartitionWindows::close_quiet`]
//! closes its windows on the wall clock. `stream/README.md` states the rules
//! with a worked example.

use auth_core::local_day::DayCache;
use auth_core::ports::{Aggregate, MeterLastReading, WindowOwner, WindowSlot, WindowUpdate};
use auth_core::region::REGIONS;
use auth_core::spec::WindowSpec;
use auth_core::{Reading, Region, Utility};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

const DAY_MS: i64 = 86_400_000;

/// Window sizes and time bounds of one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    /// Ascending; the smallest decides lateness for all sizes.
    pub sizes_ms: Vec<i64>,
    pub out_of_orderness_ms: i64,
    /// How long after its end, on its customer's watermark, a customer bin takes readings.
    pub allowed_lateness_ms: i64,
    /// How long after its end, on the partition's watermark, a region bin takes readings.
    pub region_lateness_ms: i64,
    /// A customer without readings for this long (log time) has its bins closed.
    pub idle_timeout_ms: i64,
}

impl WindowConfig {
    pub fn from_spec(spec: &WindowSpec) -> Self {
        Self {
            sizes_ms: spec.effective_sizes_ms(),
            out_of_orderness_ms: i64::from(spec.out_of_orderness_secs) * 1_000,
            allowed_lateness_ms: i64::from(spec.allowed_lateness_secs) * 1_000,
            region_lateness_ms: i64::from(spec.region_lateness_secs) * 1_000,
            idle_timeout_ms: i64::from(spec.idle_timeout_secs) * 1_000,
        }
    }

    /// How often, in log time, the partition looks for idle customers and
    /// settled days: half the idle timeout, at least a second.
    fn scan_period_ms(&self) -> i64 {
        (self.idle_timeout_ms / 2).max(1_000)
    }
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    /// Counted, into a window that had already been emitted (it is emitted again).
    CountedLate,
    /// Same meter and event time as a reading already counted.
    Duplicate,
    /// Past the allowed lateness of its smallest window on its customer's
    /// watermark, or of its day on the partition's. It stays in the log for
    /// the daily batch.
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
/// offsets from `base_ms`. A cumulative meter's newest register is kept too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MeterSeen {
    pub(crate) meter_id: u64,
    pub(crate) base_ms: i64,
    pub(crate) seen: Vec<u32>,
    /// Boxed: only cumulative meters have one, and the others pay 8 bytes.
    register: Option<Box<Register>>,
}

/// A cumulative meter's register at an event time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Register {
    ts_ms: i64,
    value: f64,
}

impl MeterSeen {
    fn new(meter_id: u64, ts_ms: i64) -> Self {
        Self { meter_id, base_ms: ts_ms, seen: vec![0], register: None }
    }

    /// The state a version-2 checkpoint kept, which had no registers.
    pub(crate) fn without_register(meter_id: u64, base_ms: i64, seen: Vec<u32>) -> Self {
        Self { meter_id, base_ms, seen, register: None }
    }

    /// The consumption since the meter's newest register before `ts_ms`, when
    /// `value` is its register at `ts_ms`: `None` for its first register, a
    /// fall (a rollover or a reset: the batch, which knows the registry's
    /// rollover, tells them apart and counts the interval), and a register
    /// older than the newest, whose consumption the newer one already counted.
    fn advance_register(&mut self, ts_ms: i64, value: f64) -> Option<f64> {
        match &mut self.register {
            None => {
                self.register = Some(Box::new(Register { ts_ms, value }));
                None
            }
            Some(newest) if ts_ms > newest.ts_ms => {
                let advance = value - newest.value;
                **newest = Register { ts_ms, value };
                (advance >= 0.0).then_some(advance)
            }
            Some(_) => None,
        }
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

    /// The meter's newest counted reading time.
    fn newest(&self) -> Option<MeterLastReading> {
        self.seen.last().map(|&offset| MeterLastReading { meter_id: self.meter_id, ts_ms: self.base_ms + i64::from(offset) })
    }
}

/// State of one customer in one partition (so: one utility).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CustomerState {
    pub(crate) customer_id: u64,
    pub(crate) region_index: u8,
    /// Newest event time of the customer's readings, each capped at the log
    /// time it arrived at; the customer's watermark trails it by the
    /// out-of-orderness bound.
    pub(crate) clock_ms: i64,
    /// Log time of the customer's newest reading.
    pub(crate) last_log_ms: i64,
    pub(crate) bins: SmallVec<[Bin; 4]>,
    pub(crate) meters: SmallVec<[MeterSeen; 1]>,
    /// The watermark at which a bin closes or is purged next; 0 after a
    /// restore, so that the first reading recomputes it.
    #[serde(skip)]
    next_due_ms: i64,
    #[serde(skip)]
    pub(crate) dirty: bool,
    /// A meter counted a reading since [`PartitionWindows::take_meter_readings`].
    #[serde(skip)]
    meters_read: bool,
}

impl CustomerState {
    pub(crate) fn new(customer_id: u64, region_index: u8, clock_ms: i64, last_log_ms: i64) -> Self {
        Self {
            customer_id,
            region_index,
            clock_ms,
            last_log_ms,
            bins: SmallVec::new(),
            meters: SmallVec::new(),
            next_due_ms: 0,
            dirty: false,
            meters_read: false,
        }
    }

    /// Whether a meter of its has a register from `since_ms` on: a customer
    /// without windows is kept for it, so that its meter's next register
    /// counts (its first one counts nothing).
    pub(crate) fn holds_register_since(&self, since_ms: i64) -> bool {
        self.meters.iter().any(|meter| meter.register.as_ref().is_some_and(|register| register.ts_ms >= since_ms))
    }

    pub(crate) fn with_bins(mut self, bins: SmallVec<[Bin; 4]>, meters: SmallVec<[MeterSeen; 1]>) -> Self {
        self.bins = bins;
        self.meters = meters;
        self
    }
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
/// each cell holds the starts kept for that size and region, newest last.
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
        let at = match cell.iter().rposition(|(start, _)| *start == start_ms) {
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

    fn retain(&mut self, mut keep: impl FnMut(RegionKey, &mut RegionBin) -> bool) {
        for (cell, bins) in self.cells.iter_mut().enumerate() {
            bins.retain(|(start, bin)| keep(Self::key(cell, *start), bin));
        }
    }
}

pub use auth_core::ports::PartitionCounts;

/// What closes and purges a customer's bins in one pass over them.
#[derive(Clone, Copy)]
struct Deadlines {
    /// The customer's watermark: bins ending at or before it close, and are
    /// purged past the allowed lateness.
    customer_watermark: i64,
    /// Bins ending at or before it close as well (an idle customer's log clock).
    close_before: i64,
    /// The partition's watermark: bins of a day that ended more than the
    /// allowed lateness before it are purged.
    partition_watermark: i64,
}

/// The windows of one log partition.
pub struct PartitionWindows {
    pub(crate) utility: Utility,
    pub(crate) config: WindowConfig,
    /// Newest event time of the partition's readings, each capped at its log
    /// time: the partition's watermark trails it by the out-of-orderness bound.
    pub(crate) clock_ms: Option<i64>,
    /// Newest log time of the partition's readings.
    pub(crate) last_log_ms: i64,
    pub(crate) slots: Vec<Option<CustomerState>>,
    free_slots: Vec<u32>,
    index: FxHashMap<u64, u32>,
    /// Slot of the previous reading.
    last_slot: u32,
    pub(crate) regions: RegionBins,
    /// Partition watermark at which a region bin closes or is purged next.
    region_due_ms: i64,
    /// Log time at which the next scan for idle customers and settled days runs.
    next_scan_ms: i64,
    dirty_slots: Vec<u32>,
    /// Updates of bins purged before the next flush took them.
    pending: Vec<WindowUpdate>,
    /// Slots whose meters counted a reading since the meters' times were last taken.
    meters_read_slots: Vec<u32>,
    /// Those times of customers dropped before they were taken.
    meters_read_pending: Vec<MeterLastReading>,
    pub(crate) counts: PartitionCounts,
    /// Each region's local day last looked up: day windows are local days.
    days: DayCache,
}

impl PartitionWindows {
    pub fn new(utility: Utility, config: WindowConfig) -> Self {
        let regions = RegionBins::new(config.sizes_ms.len());
        Self {
            utility,
            config,
            clock_ms: None,
            last_log_ms: i64::MIN,
            slots: Vec::new(),
            free_slots: Vec::new(),
            index: FxHashMap::default(),
            last_slot: u32::MAX,
            regions,
            region_due_ms: i64::MAX,
            next_scan_ms: i64::MIN,
            dirty_slots: Vec::new(),
            pending: Vec::new(),
            meters_read_slots: Vec::new(),
            meters_read_pending: Vec::new(),
            counts: PartitionCounts::default(),
            days: DayCache::default(),
        }
    }

    /// The newest counted reading time of each meter that counted one since
    /// the last call: what the stream tells the serving store of its meters.
    pub fn take_meter_readings(&mut self) -> Vec<MeterLastReading> {
        let mut meters = std::mem::take(&mut self.meters_read_pending);
        for slot in self.meters_read_slots.drain(..) {
            let Some(state) = self.slots[slot as usize].as_mut() else { continue };
            if std::mem::take(&mut state.meters_read) {
                meters.extend(state.meters.iter().filter_map(MeterSeen::newest));
            }
        }
        meters
    }

    /// The partition's watermark: its newest (log-capped) event time minus the
    /// out-of-orderness bound; `None` before the first reading.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.clock_ms.map(|clock| clock - self.config.out_of_orderness_ms)
    }

    pub fn counts(&self) -> PartitionCounts {
        self.counts
    }

    /// Open (customer, window) pairs held, closed-but-within-lateness ones included.
    pub fn open_windows(&self) -> usize {
        self.slots.iter().flatten().map(|state| state.bins.len()).sum()
    }

    /// Customers whose state this partition holds.
    pub fn customers(&self) -> usize {
        self.index.len()
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
        let regions: usize = self
            .regions
            .cells
            .iter()
            .map(|cell| size_of_val(cell) + if cell.spilled() { cell.capacity() * size_of::<(i64, RegionBin)>() } else { 0 })
            .sum();
        self.slots.capacity() * size_of::<Option<CustomerState>>()
            + self.index.capacity() * (size_of::<(u64, u32)>() + 1)
            + (self.free_slots.capacity() + self.dirty_slots.capacity() + self.meters_read_slots.capacity()) * size_of::<u32>()
            + self.meters_read_pending.capacity() * size_of::<MeterLastReading>()
            + customers
            + regions
    }

    pub(crate) fn count_malformed(&mut self) {
        self.counts.malformed += 1;
    }

    pub(crate) fn count_quarantined(&mut self) {
        self.counts.quarantined += 1;
    }

    /// Counts one reading of this partition's utility that the log took at
    /// `log_ms`. Its event time counts for the watermarks only up to `log_ms`,
    /// so a meter whose clock runs ahead cannot close windows early; the
    /// caller quarantines readings dated too far ahead before they get here.
    pub fn add(&mut self, reading: &Reading, log_ms: i64) -> Outcome {
        let ts_ms = reading.ts_ms;
        let capped_ms = ts_ms.min(log_ms);
        let config = &self.config;
        let (smallest, lateness) = (config.sizes_ms[0], config.allowed_lateness_ms);
        let partition_watermark = self.watermark_ms().unwrap_or(i64::MIN);
        let day_end_ms = self.days.day_of(reading.region, ts_ms).end;
        if day_settled(day_end_ms, lateness, partition_watermark) {
            self.counts.too_late += 1;
            return Outcome::TooLate;
        }
        let slot = self.slot_of(reading, log_ms);
        let ooo = self.config.out_of_orderness_ms;
        let state = self.slots[slot as usize].as_mut().unwrap_or_else(|| unreachable!("slot_of returns a live slot"));
        let customer_watermark = state.clock_ms.saturating_sub(ooo);
        let smallest_end = ts_ms - ts_ms.rem_euclid(smallest) + smallest;
        if smallest_end.saturating_add(lateness) <= customer_watermark {
            self.counts.too_late += 1;
            return Outcome::TooLate;
        }
        let forget_before = customer_watermark.saturating_sub(lateness + smallest);
        let meter = match state.meters.iter().position(|meter| meter.meter_id == reading.meter_id) {
            Some(at) => {
                if !state.meters[at].insert(ts_ms, forget_before) {
                    self.counts.duplicates += 1;
                    return Outcome::Duplicate;
                }
                at
            }
            None => {
                state.meters.push(MeterSeen::new(reading.meter_id, ts_ms));
                state.meters.len() - 1
            }
        };
        let consumption = match reading.cumulative {
            true => state.meters[meter].advance_register(ts_ms, reading.value),
            false => Some(reading.value),
        };
        if !state.meters_read {
            state.meters_read = true;
            self.meters_read_slots.push(slot);
        }
        let mut late = false;
        let mut region_too_late = false;
        let sizes = if consumption.is_some() { self.config.sizes_ms.as_slice() } else { &[] };
        let value = consumption.unwrap_or_default();
        for (size_index, &size) in sizes.iter().enumerate() {
            let (start_ms, end_ms) = window_of(&mut self.days, size, state.region_index, ts_ms);
            let size_index = size_index as u8;
            match state.bins.iter_mut().find(|bin| bin.size_index == size_index && bin.start_ms == start_ms) {
                Some(bin) => {
                    bin.agg.add(value);
                    bin.dirty = true;
                    late |= bin.closed;
                }
                None => {
                    let closed = end_ms <= customer_watermark;
                    if closed {
                        self.counts.windows_emitted += 1;
                    }
                    late |= closed;
                    state.bins.push(Bin { start_ms, agg: Agg::of(value), size_index, closed, dirty: true });
                    state.next_due_ms = state.next_due_ms.min(if closed { end_ms + lateness } else { end_ms });
                }
            }
            if end_ms.saturating_add(self.config.region_lateness_ms) <= partition_watermark {
                region_too_late = true;
                continue;
            }
            let region_closed = end_ms <= partition_watermark;
            let region = self.regions.get_or_insert((state.region_index, size_index, start_ms), region_closed);
            region.agg.add(value);
            region.dirty = true;
            self.region_due_ms = self.region_due_ms.min(if region.closed {
                end_ms + self.config.region_lateness_ms
            } else {
                end_ms
            });
        }
        if region_too_late {
            self.counts.region_too_late += 1;
        }
        state.last_log_ms = state.last_log_ms.max(log_ms);
        if capped_ms > state.clock_ms {
            state.clock_ms = capped_ms;
            let customer_watermark = capped_ms - ooo;
            if customer_watermark >= state.next_due_ms {
                let deadlines = Deadlines { customer_watermark, close_before: i64::MIN, partition_watermark };
                settle_bins(state, &self.config, &mut self.days, self.utility, deadlines, &mut self.counts, &mut self.pending);
            }
        }
        if !state.dirty {
            state.dirty = true;
            self.dirty_slots.push(slot);
        }
        self.last_log_ms = self.last_log_ms.max(log_ms);
        if self.clock_ms.is_none_or(|clock| capped_ms > clock) {
            self.clock_ms = Some(capped_ms);
            if capped_ms - ooo >= self.region_due_ms {
                self.settle_regions(capped_ms - ooo);
            }
        }
        if self.last_log_ms >= self.next_scan_ms {
            let period = self.config.scan_period_ms();
            self.next_scan_ms = (self.last_log_ms - self.last_log_ms.rem_euclid(period)).saturating_add(period);
            self.scan(self.last_log_ms);
        }
        if late {
            self.counts.counted_late += 1;
            Outcome::CountedLate
        } else {
            self.counts.counted += 1;
            Outcome::Counted
        }
    }

    fn slot_of(&mut self, reading: &Reading, log_ms: i64) -> u32 {
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
        let state = CustomerState::new(reading.customer_id, reading.region.index() as u8, i64::MIN, log_ms);
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

    /// Closes the region bins whose end the partition's watermark passed and
    /// purges those past the region lateness.
    fn settle_regions(&mut self, partition_watermark: i64) {
        let (sizes, region_lateness) = (&self.config.sizes_ms, self.config.region_lateness_ms);
        let mut due = i64::MAX;
        let mut purged = Vec::new();
        let days = &mut self.days;
        self.regions.retain(|key @ (region_index, size_index, start_ms), bin| {
            let end_ms = window_of(days, sizes[usize::from(size_index)], region_index, start_ms).1;
            if !bin.closed && end_ms <= partition_watermark {
                bin.closed = true;
                bin.dirty = true;
            }
            let keep = end_ms + region_lateness > partition_watermark;
            if keep {
                due = due.min(if bin.closed { end_ms + region_lateness } else { end_ms });
            } else if bin.dirty {
                purged.push((key, *bin));
            }
            keep
        });
        for (key, bin) in purged {
            self.pending.push(region_update(self.utility, &self.config, key, &bin));
        }
        self.region_due_ms = due;
    }

    /// One pass over every customer at log time `at_ms`: closes the bins of
    /// customers idle since `at_ms - idleTimeout` once `at_ms` passed their
    /// end, purges the bins of days the partition's watermark settled, and
    /// drops customers left without bins.
    fn scan(&mut self, at_ms: i64) {
        let Some(partition_watermark) = self.watermark_ms() else { return };
        let (ooo, idle) = (self.config.out_of_orderness_ms, self.config.idle_timeout_ms);
        for slot in 0..self.slots.len() {
            let Some(state) = self.slots[slot].as_mut() else { continue };
            let idle_customer = state.last_log_ms.saturating_add(idle) <= at_ms;
            let deadlines = Deadlines {
                customer_watermark: state.clock_ms.saturating_sub(ooo),
                close_before: if idle_customer { at_ms - ooo } else { i64::MIN },
                partition_watermark,
            };
            let emitted = settle_bins(state, &self.config, &mut self.days, self.utility, deadlines, &mut self.counts, &mut self.pending);
            if emitted && !state.dirty {
                state.dirty = true;
                self.dirty_slots.push(slot as u32);
            }
            let registers_since = partition_watermark.saturating_sub(DAY_MS);
            if state.bins.is_empty() && !state.holds_register_since(registers_since) {
                if state.meters_read {
                    self.meters_read_pending.extend(state.meters.iter().filter_map(MeterSeen::newest));
                }
                self.index.remove(&state.customer_id);
                self.slots[slot] = None;
                self.free_slots.push(slot as u32);
            }
        }
    }

    /// Closes, on the wall clock `now_ms`, the windows of a partition that has
    /// taken no reading for the idle timeout: its customers' and its
    /// regions' bins whose end `now_ms` passed. (A partition that takes
    /// readings closes idle customers' bins on its log clock instead.) Only
    /// the `closed` flags depend on when this runs.
    pub fn close_quiet(&mut self, now_ms: i64) {
        if self.clock_ms.is_none() || self.last_log_ms.saturating_add(self.config.idle_timeout_ms) > now_ms {
            return;
        }
        self.scan(now_ms);
        let close_before = now_ms - self.config.out_of_orderness_ms;
        let sizes = &self.config.sizes_ms;
        for ((region_index, size_index, start_ms), bin) in self.regions.iter_mut() {
            if !bin.closed && window_of(&mut self.days, sizes[usize::from(size_index)], region_index, start_ms).1 <= close_before {
                bin.closed = true;
                bin.dirty = true;
            }
        }
    }

    /// Takes every window changed since the last call, as whole-window upserts.
    pub fn take_updates(&mut self) -> Vec<WindowUpdate> {
        let sizes = &self.config.sizes_ms;
        // One allocation, sized for two dirty bins per window size per
        // customer (an open and a closing one) and a bin per size and region;
        // untouched pages of a reservation cost nothing, while regrowth
        // copies and faults every page.
        let dirty_bins = 2 * self.dirty_slots.len() * sizes.len() + sizes.len() * REGIONS.len();
        let mut updates = Vec::with_capacity(self.pending.len() + dirty_bins);
        updates.append(&mut self.pending);
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

    /// Rebuilds indexes and due times after state was restored from a checkpoint.
    pub(crate) fn restore(&mut self, customers: Vec<CustomerState>, regions: Vec<(RegionKey, RegionBin)>) {
        for state in customers {
            let slot = self.slots.len() as u32;
            self.index.insert(state.customer_id, slot);
            self.slots.push(Some(state));
        }
        for (key, bin) in regions {
            self.regions.insert(key, bin);
        }
        self.region_due_ms = i64::MIN;
        self.next_scan_ms = i64::MIN;
    }
}

/// Whether the day ending at `day_end_ms` ended more than the allowed
/// lateness before the partition's watermark: the stream takes no more of it.
fn day_settled(day_end_ms: i64, lateness: i64, partition_watermark: i64) -> bool {
    day_end_ms.saturating_add(lateness) <= partition_watermark
}

/// The start and end of the window of `size_ms` that holds `ts_ms` for a
/// customer of the region `region_index`: a day-sized window is the
/// region's local day (23 to 25 hours, [`auth_core::local_day`]); any
/// other size is aligned to the epoch.
fn window_of(days: &mut DayCache, size_ms: i64, region_index: u8, ts_ms: i64) -> (i64, i64) {
    if size_ms == DAY_MS
        && let Some(region) = Region::from_index(usize::from(region_index))
    {
        let day = days.day_of(region, ts_ms);
        return (day.start, day.end);
    }
    let start_ms = ts_ms - ts_ms.rem_euclid(size_ms);
    (start_ms, start_ms + size_ms)
}

/// Closes and purges one customer's bins by `deadlines`, queueing the
/// updates of purged bins; true when a bin closed (the customer has updates).
fn settle_bins(
    state: &mut CustomerState,
    config: &WindowConfig,
    days: &mut DayCache,
    utility: Utility,
    deadlines: Deadlines,
    counts: &mut PartitionCounts,
    pending: &mut Vec<WindowUpdate>,
) -> bool {
    let (sizes, lateness) = (&config.sizes_ms, config.allowed_lateness_ms);
    let close_before = deadlines.customer_watermark.max(deadlines.close_before);
    let mut closed_any = false;
    let mut due = i64::MAX;
    let (customer_id, region_index) = (state.customer_id, state.region_index);
    state.bins.retain(|bin| {
        let end_ms = window_of(days, sizes[usize::from(bin.size_index)], region_index, bin.start_ms).1;
        let day_end_ms = window_of(days, DAY_MS, region_index, bin.start_ms).1;
        let purge = end_ms + lateness <= deadlines.customer_watermark || day_settled(day_end_ms, lateness, deadlines.partition_watermark);
        if !bin.closed && (purge || end_ms <= close_before) {
            bin.closed = true;
            bin.dirty = true;
            counts.windows_emitted += 1;
            closed_any = true;
        }
        if purge {
            if bin.dirty {
                pending.push(customer_update(utility, sizes, customer_id, bin));
            }
            return false;
        }
        due = due.min(if bin.closed { end_ms + lateness } else { end_ms });
        true
    });
    state.next_due_ms = due;
    if state.bins.spilled() && state.bins.len() <= state.bins.inline_size() {
        // Bins spill to the heap briefly around window boundaries; back inline, they cost nothing extra.
        state.bins.shrink_to_fit();
    }
    closed_any
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
    use std::collections::BTreeMap;

    use auth_core::CustomerKind;

    use super::*;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    /// 2026-11-28T00:00:00Z.
    const T0: i64 = 1_795_824_000_000;
    /// A log time after every event time of these tests (so no reading is capped), unless one says otherwise.
    const LOG: i64 = T0 + 2 * DAY_MS;

    fn config() -> WindowConfig {
        WindowConfig {
            sizes_ms: vec![MINUTE, HOUR, DAY_MS],
            out_of_orderness_ms: 10_000,
            allowed_lateness_ms: MINUTE,
            region_lateness_ms: HOUR,
            idle_timeout_ms: 30_000,
        }
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
            cumulative: false,
        }
    }

    #[test]
    fn each_meters_newest_counted_reading_is_taken_once_even_when_its_customer_is_dropped() {
        let mut windows = PartitionWindows::new(Utility::Electricity, config());
        let of_meter = |meter_id, ts_ms| Reading { meter_id, ..reading(1, ts_ms, 1.0) };
        let add = |windows: &mut PartitionWindows, reading: Reading| windows.add(&reading, reading.ts_ms + 1_000);
        add(&mut windows, of_meter(4, T0 + MINUTE));
        add(&mut windows, of_meter(4, T0));
        add(&mut windows, of_meter(5, T0 + 30_000));
        let mut taken = windows.take_meter_readings();
        taken.sort_by_key(|meter| meter.meter_id);
        assert_eq!(taken, vec![MeterLastReading { meter_id: 4, ts_ms: T0 + MINUTE }, MeterLastReading { meter_id: 5, ts_ms: T0 + 30_000 }]);
        assert_eq!(add(&mut windows, of_meter(4, T0 + MINUTE)), Outcome::Duplicate);
        assert_eq!(windows.take_meter_readings(), Vec::new(), "nothing counted since");

        // Customer 1 reads again, then its day settles and it is dropped before the next take.
        add(&mut windows, of_meter(4, T0 + 2 * MINUTE));
        add(&mut windows, reading(2, T0 + 2 * DAY_MS, 1.0));
        assert_eq!(windows.customers(), 1, "customer 1 was dropped");
        let mut taken = windows.take_meter_readings();
        taken.sort_by_key(|meter| meter.meter_id);
        assert_eq!(taken, vec![
            MeterLastReading { meter_id: 4, ts_ms: T0 + 2 * MINUTE },
            MeterLastReading { meter_id: 5, ts_ms: T0 + 30_000 },
            MeterLastReading { meter_id: 8, ts_ms: T0 + 2 * DAY_MS },
        ]);
    }

    #[test]
    fn a_cumulative_meters_registers_count_their_advances_only() {
        let mut windows = PartitionWindows::new(Utility::Electricity, config());
        let register = |ts_ms, value| Reading { cumulative: true, ..reading(1, ts_ms, value) };
        let add = |windows: &mut PartitionWindows, reading: Reading| windows.add(&reading, reading.ts_ms + 1_000);
        assert_eq!(add(&mut windows, register(T0, 99_990.0)), Outcome::Counted, "the first register is the base");
        // Scans on the log clock keep a customer that has no window yet but a register.
        add(&mut windows, reading(2, T0 + 2 * HOUR, 1.0));
        add(&mut windows, register(T0 + MINUTE, 99_995.5));
        add(&mut windows, register(T0 + MINUTE + 30_000, 99_995.5));
        add(&mut windows, register(T0 + 30_000, 99_993.0));
        add(&mut windows, register(T0 + 2 * MINUTE, 3.0));
        add(&mut windows, register(T0 + 3 * MINUTE, 7.0));
        assert_eq!(add(&mut windows, register(T0 + 3 * MINUTE, 7.0)), Outcome::Duplicate);
        let updates = windows.take_updates();
        assert_eq!(
            minute_windows(&updates, WindowOwner::Customer(1)),
            vec![(1, 5.5, 2, true), (3, 4.0, 1, false)],
            "minute 1: its advance and a standstill; a late register counts nothing (the newer one counted it); a fall (rollover or reset) neither"
        );
    }

    fn minute_windows(updates: &[WindowUpdate], owner: WindowOwner) -> Vec<(i64, f64, u64, bool)> {
        let mut found: Vec<(i64, f64, u64, bool)> = latest(updates)
            .into_iter()
            .filter(|((window_owner, slot), _)| *window_owner == owner && slot.width_ms == MINUTE)
            .map(|((_, slot), update)| ((slot.start_ms - T0) / MINUTE, update.aggregate.sum, update.aggregate.count, update.closed))
            .collect();
        found.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        found
    }

    /// The last update of every window, as a serving store would hold it.
    fn latest(updates: &[WindowUpdate]) -> BTreeMap<(WindowOwner, WindowSlot), WindowUpdate> {
        updates.iter().map(|update| ((update.owner, update.slot), *update)).collect()
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
        .map(|r| windows.add(r, LOG))
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
            .find(|u| u.owner == customer && u.slot.width_ms == DAY_MS)
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
    fn one_meter_dated_ahead_makes_no_other_meter_late() {
        let mut windows = PartitionWindows::new(Utility::Electricity, config());
        let now = T0 + 12 * HOUR;
        assert_eq!(windows.add(&reading(1, now + 55 * MINUTE, 5.0), now), Outcome::Counted, "within what the caller lets through");
        assert_eq!(windows.watermark_ms(), Some(now - 10_000), "capped at the log's clock");
        for customer in 2..=20 {
            assert_eq!(windows.add(&reading(customer, now - 20_000, 1.0), now + 1_000), Outcome::Counted, "{customer}");
        }
        let updates = windows.take_updates();
        assert_eq!(minute_windows(&updates, WindowOwner::Customer(2)), vec![(12 * 60 - 1, 1.0, 1, false)]);
        assert_eq!(minute_windows(&updates, WindowOwner::Customer(1)), vec![(12 * 60 + 55, 5.0, 1, false)], "its own window stays open");
        assert_eq!(windows.counts().too_late, 0);
    }

    #[test]
    fn day_windows_are_the_customers_local_days_of_23_hours_in_spring() {
        let california = Region::from_code("US-CA").expect("California");
        let in_california = |ts_ms: i64| Reading { region: california, ..reading(1, ts_ms, 1.0) };
        // 2026-03-08, when clocks spring forward: 08:00 UTC to 07:00 UTC the next day.
        let (day_start, day_end) = (1_772_956_800_000, 1_773_039_600_000);
        let mut windows = PartitionWindows::new(Utility::Electricity, config());
        for ts_ms in [day_start - MINUTE, day_start, day_end - MINUTE, day_end + MINUTE] {
            assert_eq!(windows.add(&in_california(ts_ms), ts_ms + 1_000), Outcome::Counted);
        }
        let days: Vec<(i64, f64, bool)> = windows
            .take_updates()
            .into_iter()
            .filter(|u| u.owner == WindowOwner::Customer(1) && u.slot.width_ms == DAY_MS)
            .map(|u| (u.slot.start_ms, u.aggregate.sum, u.closed))
            .collect();
        assert_eq!(days.len(), 3, "{days:?}");
        assert!(days.contains(&(day_start, 2.0, true)), "the local day holds its first and last minute and closed at local midnight: {days:?}");
        assert!(days.contains(&(day_end, 1.0, false)), "{days:?}");
    }

    #[test]
    fn a_concentrator_upload_is_on_time_for_its_meter_and_changes_no_other() {
        let live = |windows: &mut PartitionWindows, updates: &mut Vec<WindowUpdate>, minute: i64, with_upload: bool| {
            let now = T0 + 11 * HOUR + minute * MINUTE;
            for customer in 1..=3 {
                windows.add(&reading(customer, now, 1.0), now + 500);
            }
            if with_upload && minute == 30 {
                // The concentrator's daily batch: six hours of meter 9's local day (New York's starts at 05:00 UTC), every 15 minutes, oldest first.
                for quarter in 0..24 {
                    assert_eq!(windows.add(&reading(9, T0 + 5 * HOUR + quarter * 15 * MINUTE, 2.0), now + 600), Outcome::Counted, "{quarter}");
                }
            }
            updates.extend(windows.take_updates());
        };
        let (mut plain, mut with_upload) = (PartitionWindows::new(Utility::Electricity, config()), PartitionWindows::new(Utility::Electricity, config()));
        let (mut plain_updates, mut upload_updates) = (Vec::new(), Vec::new());
        for minute in 0..60 {
            live(&mut plain, &mut plain_updates, minute, false);
            live(&mut with_upload, &mut upload_updates, minute, true);
        }
        assert_eq!(with_upload.counts().too_late, 0, "nothing of the upload is too late");
        let nine = minute_windows(&upload_updates, WindowOwner::Customer(9));
        assert_eq!(nine.len(), 24);
        assert!(nine.iter().all(|&(_, sum, count, closed)| (sum, count, closed) == (2.0, 1, true)), "{nine:?}");
        let (plain_latest, upload_latest) = (latest(&plain_updates), latest(&upload_updates));
        for customer in 1..=3 {
            let of = |all: &BTreeMap<(WindowOwner, WindowSlot), WindowUpdate>| {
                all.iter().filter(|((owner, _), _)| *owner == WindowOwner::Customer(customer)).map(|(_, u)| *u).collect::<Vec<_>>()
            };
            assert_eq!(of(&upload_latest), of(&plain_latest), "customer {customer}'s windows are unchanged");
        }
        let region_hours = |all: &BTreeMap<(WindowOwner, WindowSlot), WindowUpdate>| {
            all.iter()
                .filter(|((owner, slot), _)| matches!(owner, WindowOwner::Region(_)) && slot.width_ms == HOUR)
                .map(|((_, slot), u)| ((slot.start_ms - T0) / HOUR, u.aggregate.sum))
                .collect::<Vec<_>>()
        };
        assert_eq!(region_hours(&plain_latest), vec![(11, 180.0)]);
        assert_eq!(
            region_hours(&upload_latest),
            vec![(10, 8.0), (11, 180.0)],
            "the hour within the region lateness takes the upload; older hours are left to the batch"
        );
        assert_eq!(
            with_upload.counts().region_too_late,
            22,
            "the readings before 10:00, and those of 10:00 and 10:15 for their minute windows"
        );
    }

    #[test]
    fn windows_of_quiet_meters_close_on_the_log_clock_and_of_a_quiet_partition_on_the_wall_clock() {
        let mut windows = PartitionWindows::new(Utility::Electricity, config());
        let start = T0 + 12 * HOUR;
        windows.add(&reading(1, start, 1.0), start);
        for second in (0..=75).step_by(5) {
            windows.add(&reading(2, start + second * 1_000, 1.0), start + second * 1_000);
        }
        let updates = windows.take_updates();
        assert_eq!(
            minute_windows(&updates, WindowOwner::Customer(1)),
            vec![(12 * 60, 1.0, 1, true)],
            "quiet for the idle timeout of log time, and the log's clock passed the window's end"
        );
        assert_eq!(minute_windows(&updates, WindowOwner::Customer(2)), vec![(12 * 60, 12.0, 12, true), (12 * 60 + 1, 4.0, 4, false)]);
        windows.close_quiet(start + 90_000);
        assert!(windows.take_updates().is_empty(), "the partition is not quiet yet");
        windows.close_quiet(start + 140_000);
        let updates = windows.take_updates();
        assert_eq!(minute_windows(&updates, WindowOwner::Customer(2)), vec![(12 * 60 + 1, 4.0, 4, true)]);
        let region = WindowOwner::Region(Region::from_code("US-NY").expect("New York"));
        assert_eq!(minute_windows(&updates, region), vec![(12 * 60 + 1, 4.0, 4, true)]);
        let hours: Vec<bool> = updates.iter().filter(|u| u.slot.width_ms == HOUR).map(|u| u.closed).collect();
        assert!(hours.is_empty(), "the hour has not ended: {hours:?}");
        assert_eq!(windows.add(&reading(2, start + 110_000, 1.0), start + 141_000), Outcome::CountedLate, "closed, still within lateness");
    }

    #[test]
    fn settled_days_free_quiet_customers_and_updates_are_not_lost() {
        let mut windows = PartitionWindows::new(Utility::Electricity, WindowConfig { sizes_ms: vec![MINUTE, DAY_MS], ..config() });
        windows.add(&reading(1, T0, 1.0), LOG);
        windows.add(&reading(2, T0 + DAY_MS + 10 * MINUTE, 1.0), LOG + HOUR);
        assert_eq!(windows.add(&reading(1, T0 + 5_000, 1.0), LOG + HOUR), Outcome::TooLate, "its day has settled");
        let updates = windows.take_updates();
        assert_eq!(minute_windows(&updates, WindowOwner::Customer(1)), vec![(0, 1.0, 1, true)], "emitted when purged");
        assert_eq!(windows.customers(), 1, "customer 1's state is gone");
        windows.add(&reading(3, T0 + DAY_MS + 10 * MINUTE, 1.0), LOG + HOUR);
        assert_eq!(windows.slots.len(), 2, "the freed slot is reused");
    }

    #[test]
    fn a_checkpoint_survives_a_change_of_window_sizes() {
        let mut windows = PartitionWindows::new(Utility::Electricity, config());
        windows.add(&reading(1, T0 + 5_000, 1.0), LOG);
        let blob = crate::checkpoint::encode(&windows, 1, Default::default()).expect("encode").0;
        let five_minutes = WindowConfig { sizes_ms: vec![300_000, DAY_MS], ..config() };
        let (mut resumed, _) = crate::checkpoint::decode(&blob, Utility::Electricity, five_minutes).expect("decode");
        resumed.add(&reading(1, T0 + 10_000, 2.0), LOG);
        let updates = resumed.take_updates();
        let sums = |width: i64| {
            updates
                .iter()
                .filter(|u| u.owner == WindowOwner::Customer(1) && u.slot.width_ms == width)
                .map(|u| u.aggregate.sum)
                .collect::<Vec<_>>()
        };
        assert_eq!(sums(DAY_MS), vec![3.0], "the kept size continues");
        assert_eq!(sums(300_000), vec![2.0], "the new size starts empty");
        assert!(sums(MINUTE).is_empty(), "the dropped size is gone");
    }

    #[test]
    fn checkpoint_round_trip_continues_identically() {
        let input: Vec<(Reading, i64)> = (0..4_000)
            .map(|i| {
                let late = if i % 13 == 0 { 90_000 } else { 0 };
                let ts = T0 + (i as i64) * 2_000 - (i as i64 % 5) * 3_000 - late + if i % 97 == 0 { 2 * HOUR } else { 0 };
                (reading(1 + i % 7, ts, f64::from(i as u32 % 11)), T0 + (i as i64) * 2_000 + 1_000)
            })
            .collect();
        let mut straight = PartitionWindows::new(Utility::Electricity, config());
        let mut straight_updates = Vec::new();
        for (r, log_ms) in &input {
            straight.add(r, *log_ms);
        }
        straight_updates.extend(straight.take_updates());
        let mut first = PartitionWindows::new(Utility::Electricity, config());
        for (r, log_ms) in &input[..1_500] {
            first.add(r, *log_ms);
        }
        let mut resumed_updates = first.take_updates();
        let blob = crate::checkpoint::encode(&first, 1_500, Default::default()).expect("encode").0;
        let (mut resumed, offset) = crate::checkpoint::decode(&blob, Utility::Electricity, config()).expect("decode");
        assert_eq!(offset, 1_500);
        for (r, log_ms) in &input[1_500..] {
            resumed.add(r, *log_ms);
        }
        resumed_updates.extend(resumed.take_updates());
        assert_eq!(latest(&resumed_updates), latest(&straight_updates));
        assert_eq!(resumed.counts(), straight.counts());
        let counts = straight.counts();
        assert!(counts.windows_emitted > 100 && counts.counted_late > 0 && counts.too_late > 0, "{counts:?}");
    }
}
