//! Reconciliation with the stream and restatement of the serving store.
//!
//! The stream's day windows hold what the stream counted; readings that came
//! too late for it are only in the master data. After a day is recomputed,
//! its per-customer and per-region day windows in the serving store are
//! overwritten with the batch's (closed) totals, partition by partition as the
//! stream writes them, so the dashboard shows the corrected numbers. Writing
//! the same totals again changes nothing: restatement is idempotent.

use std::collections::{BTreeMap, HashMap};

use auth_core::ports::{
    Aggregate, PartitionFlush, PortError, ServingStore, TopicPartition, WindowOwner, WindowSlot, WindowUpdate,
};
use auth_core::{Region, Utility, partition_for, utility_topic};
use chrono::NaiveDate;

use crate::fold::{CustomerDay, DayOutputs};
use crate::results::Restatement;

/// Customers whose stored windows are read at once.
const CONCURRENT_READS: usize = 64;
/// Windows per store write.
const WINDOWS_PER_FLUSH: usize = 4_096;

fn day_slot(date: NaiveDate) -> WindowSlot {
    WindowSlot { width_ms: auth_master::DAY_MS, start_ms: auth_master::day_start_ms(date) }
}

/// What the stream counted for `date`, per utility: the sum of the regions' day windows.
pub async fn stream_totals(store: &dyn ServingStore, date: NaiveDate) -> Result<HashMap<Utility, Aggregate>, PortError> {
    let slot = day_slot(date);
    let mut totals: HashMap<Utility, Aggregate> = HashMap::new();
    for window in store.region_windows(auth_master::DAY_MS, slot.start_ms).await? {
        if window.window.slot != slot {
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
/// the batch's totals; returns, per utility, what changed.
#[tracing::instrument(level = "info", skip_all, fields(%date, customers = outputs.customers.len()))]
pub async fn restate(
    store: &dyn ServingStore,
    pipeline: &str,
    partitions: u32,
    date: NaiveDate,
    outputs: &DayOutputs,
) -> Result<Vec<(Utility, Restatement)>, PortError> {
    let slot = day_slot(date);
    let mut changes: BTreeMap<Utility, Restatement> = BTreeMap::new();
    let mut updates: HashMap<TopicPartition, Vec<WindowUpdate>> = HashMap::new();
    let mut regions: HashMap<(TopicPartition, Region, Utility), Aggregate> = HashMap::new();
    for days in outputs.customers.chunks(CONCURRENT_READS) {
        let stored = futures::future::try_join_all(days.iter().map(|day| store.customer_windows(day.customer_id))).await?;
        for (day, windows) in days.iter().zip(stored) {
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
            let partition = TopicPartition::new(&utility_topic(pipeline, day.utility), partition_for(day.customer_id, partitions));
            let aggregate = aggregate_of(day);
            regions.entry((partition.clone(), day.region, day.utility)).and_modify(|region| region.merge(&aggregate)).or_insert(aggregate);
            let owner = WindowOwner::Customer(day.customer_id);
            let pending = updates.entry(partition.clone()).or_default();
            pending.push(WindowUpdate { owner, utility: day.utility, slot, aggregate, closed: true });
            if pending.len() >= WINDOWS_PER_FLUSH {
                let windows = std::mem::take(pending);
                store.apply(PartitionFlush { partition, epoch: None, windows, checkpoint: None }).await?;
            }
        }
    }
    for ((partition, region, utility), aggregate) in regions {
        updates.entry(partition).or_default().push(WindowUpdate { owner: WindowOwner::Region(region), utility, slot, aggregate, closed: true });
    }
    for (partition, windows) in updates {
        for chunk in windows.chunks(WINDOWS_PER_FLUSH) {
            store.apply(PartitionFlush { partition: partition.clone(), epoch: None, windows: chunk.to_vec(), checkpoint: None }).await?;
        }
    }
    Ok(changes.into_iter().collect())
}
