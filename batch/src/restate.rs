//! Reconciliation with the stream and restatement of the serving store.
//!
//! The stream's day windows hold what the stream counted; readings that came
//! too late for it are only in the master data. After a settled day is
//! recomputed, its per-customer and per-region day windows in the serving
//! store are overwritten with the batch's (closed) totals, so the dashboard
//! shows the corrected numbers. The store then keeps the stream from writing
//! those windows again (a lagging processor, or one replaying an older
//! checkpoint) and refuses an older run's restatement, so neither can undo a
//! newer one. Region totals replace the stream's per-partition parts whole,
//! whatever the partition count was. Writing the same totals again changes
//! nothing: restatement is idempotent.

use std::collections::{BTreeMap, HashMap};

use auth_core::ports::{Aggregate, PortError, ServingStore, WindowSlot};
use auth_core::{Region, Utility};
use auth_core::local_day::LocalDays;
use chrono::NaiveDate;

use crate::fold::{CustomerDay, DayOutputs};
use crate::results::Restatement;

/// Customers whose stored windows are read at once.
const CONCURRENT_READS: usize = 64;
/// Customer windows per store write.
const WINDOWS_PER_RESTATEMENT: usize = 4_096;

/// The day window of a customer of `region`: its local day, as the stream
/// aligns day windows ([`auth_core::local_day`]).
fn day_slot(days: &LocalDays, region: Region) -> WindowSlot {
    WindowSlot { width_ms: auth_master::DAY_MS, start_ms: days.range(region).start }
}

/// What the stream counted for `date`, per utility: the sum of the regions' day windows.
pub async fn stream_totals(store: &dyn ServingStore, date: NaiveDate) -> Result<HashMap<Utility, Aggregate>, PortError> {
    let days = LocalDays::of(date);
    let mut totals: HashMap<Utility, Aggregate> = HashMap::new();
    for window in store.region_windows(auth_master::DAY_MS, days.span().start).await? {
        if window.window.slot != day_slot(&days, window.region) {
            continue;
        }
        match totals.get_mut(&window.window.utility) {
            Some(total) => total.merge(&window.window.aggregate),
            None => {
                totals.insert(window.window.utility, window.window.aggregate);
            }
        }
    }
    Ok(totals)
}

fn aggregate_of(day: &CustomerDay) -> Aggregate {
    Aggregate { sum: day.total, count: day.readings, min: day.min_value, max: day.max_value }
}

/// Overwrites the day windows of every customer and region in `outputs` with
/// the batch's totals, as restatement `version` (later runs have higher
/// versions); returns, per utility, what changed. Fails with
/// [`PortError::Superseded`] when a later run restated the day first.
#[tracing::instrument(level = "info", skip_all, fields(%date, version, customers = outputs.customers.len()))]
pub async fn restate(
    store: &dyn ServingStore,
    date: NaiveDate,
    version: u64,
    outputs: &DayOutputs,
) -> Result<Vec<(Utility, Restatement)>, PortError> {
    let days = LocalDays::of(date);
    let mut changes: BTreeMap<Utility, Restatement> = BTreeMap::new();
    // Regions whose local days start at the same instant share a day window slot, restated together.
    let mut regions: BTreeMap<(Utility, i64), BTreeMap<Region, Aggregate>> = BTreeMap::new();
    let mut pending: BTreeMap<(Utility, i64), Vec<(u64, Aggregate)>> = BTreeMap::new();
    let write = |utility, start_ms, customers, regions| {
        let slot = WindowSlot { width_ms: auth_master::DAY_MS, start_ms };
        store.restate(auth_core::ports::Restatement { utility, slot, version, customers, regions })
    };
    for batch_days in outputs.customers.chunks(CONCURRENT_READS) {
        let stored = futures::future::try_join_all(batch_days.iter().map(|day| store.customer_windows(day.customer_id))).await?;
        for (day, windows) in batch_days.iter().zip(stored) {
            let slot = day_slot(&days, day.region);
            let streamed = windows
                .iter()
                .find(|window| window.utility == day.utility && window.slot == slot)
                .map(|window| window.aggregate.sum);
            let change = changes.entry(day.utility).or_default();
            change.customers_restated += 1;
            let difference = day.total - streamed.unwrap_or(0.0);
            if streamed != Some(day.total) {
                change.customers_changed += 1;
                change.total_change += difference;
                change.largest_change = change.largest_change.max(difference.abs());
            }
            let aggregate = aggregate_of(day);
            regions
                .entry((day.utility, slot.start_ms))
                .or_default()
                .entry(day.region)
                .and_modify(|region| region.merge(&aggregate))
                .or_insert(aggregate);
            let customers = pending.entry((day.utility, slot.start_ms)).or_default();
            customers.push((day.customer_id, aggregate));
            if customers.len() >= WINDOWS_PER_RESTATEMENT {
                write(day.utility, slot.start_ms, std::mem::take(customers), Vec::new()).await?;
            }
        }
    }
    // Each utility's regions of a slot come whole, with their last customers.
    for ((utility, start_ms), regions) in regions {
        let customers = pending.remove(&(utility, start_ms)).unwrap_or_default();
        write(utility, start_ms, customers, regions.into_iter().collect()).await?;
    }
    Ok(changes.into_iter().collect())
}
