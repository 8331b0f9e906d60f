//! `auth simulate --backfill`: the fleet's history for a range of dates,
//! written straight to the master data, one task per date and log partition.
//!
//! History is clean: every meter reports once per heartbeat, in order (the
//! simulator's disorder, lateness, duplicate and malformed knobs are off).
//! Files are named as the archiver names them, with offsets counted per
//! utility, date and partition from 0, so the backfilled dates must not be
//! dates the archiver also writes.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use auth_core::spec::SimulatorSpec;
use auth_core::{PipelineSpec, Utility, partition_for};
use auth_ingest::{Simulated, Simulator};
use auth_master::{MasterStore, ReadingsBuilder, day_start_ms, file_path};
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Handle;

const DAY_MS: i64 = 86_400_000;

/// What the backfill wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backfilled {
    pub readings: u64,
    pub files: u64,
    pub bytes: u64,
}

/// The fleet's clean history: every meter once per heartbeat, in order (the
/// simulator's disorder, lateness, duplicate and malformed knobs off).
pub fn clean(simulator: &SimulatorSpec) -> SimulatorSpec {
    SimulatorSpec { out_of_order_share: 0.0, late_share: 0.0, duplicate_share: 0.0, malformed_share: 0.0, ..simulator.clone() }
}

/// Writes the master data of `[from, to]` for the spec's fleet to `out`, `threads` tasks at a time.
pub async fn run(spec: &PipelineSpec, from: NaiveDate, to: NaiveDate, out: &str, threads: usize) -> anyhow::Result<Backfilled> {
    anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    anyhow::ensure!(
        DAY_MS % (i64::from(spec.simulator.heartbeat_secs) * 1_000) == 0,
        "simulator.heartbeatSecs: {} s does not divide a day",
        spec.simulator.heartbeat_secs
    );
    let master = MasterStore::open(out).context("--out")?;
    let days = auth_master::dates(from, to);
    let simulator = clean(&spec.simulator);
    let meters = Simulator::new(&simulator, 0).fleet().meters().len() as u64;
    let per_day = meters * (DAY_MS / (i64::from(simulator.heartbeat_secs) * 1_000)) as u64;
    let bar = ProgressBar::new(per_day * days.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} backfill [{bar:30}] {human_pos}/{human_len} readings {per_sec} ETA {eta}")
            .context("progress bar template")?,
    );
    let started = Instant::now();
    let partitions = spec.log.partitions;
    let rows_per_file = (spec.archive.roll_bytes / auth_core::codec::ENCODED_LEN as u64).max(1) as usize;
    let permits = Arc::new(tokio::sync::Semaphore::new(threads.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for &date in &days {
        for partition in 0..partitions {
            let permit = Arc::clone(&permits).acquire_owned().await.context("backfill task limit")?;
            let (simulator, master, bar, handle) = (simulator.clone(), master.clone(), bar.clone(), Handle::current());
            tasks.spawn_blocking(move || {
                let _permit = permit;
                write_partition_day(&simulator, &master, date, partition, partitions, rows_per_file, &bar, &handle)
            });
        }
    }
    let mut total = Backfilled::default();
    while let Some(outcome) = tasks.join_next().await {
        let written = outcome.context("backfill task")??;
        total.readings += written.readings;
        total.files += written.files;
        total.bytes += written.bytes;
    }
    bar.finish_and_clear();
    tracing::info!(
        readings = total.readings, files = total.files, bytes = total.bytes,
        seconds = started.elapsed().as_secs_f64(), "backfill done"
    );
    Ok(total)
}

/// Generates one date's readings of one partition's customers and writes them.
#[allow(clippy::too_many_arguments)]
fn write_partition_day(
    spec: &SimulatorSpec,
    master: &MasterStore,
    date: NaiveDate,
    partition: u32,
    partitions: u32,
    rows_per_file: usize,
    bar: &ProgressBar,
    handle: &Handle,
) -> anyhow::Result<Backfilled> {
    let start_ms = day_start_ms(date);
    let mut simulator = Simulator::new(spec, start_ms);
    simulator.retain_meters(|meter| partition_for(meter.customer_id, partitions) == partition);
    let mut builders: [ReadingsBuilder; 3] = Default::default();
    let mut next_offsets = [0u64; 3];
    let mut written = Backfilled::default();
    let mut batch = Vec::new();
    let flush = |utility: Utility, builder: &mut ReadingsBuilder, next_offset: &mut u64| -> anyhow::Result<u64> {
        let rows = builder.len() as u64;
        let relative = file_path(utility, date, partition, *next_offset);
        let readings = builder.finish().context("building the readings")?;
        let file = handle.block_on(async {
            let mut file = master.create(&relative)?;
            file.write(&readings).await?;
            file.close().await
        })?;
        *next_offset += rows;
        Ok(file.bytes)
    };
    while simulator.event_time_ms() < start_ms + DAY_MS && !simulator.fleet().meters().is_empty() {
        batch.clear();
        simulator.fill(&mut batch, simulator.remaining_in_heartbeat());
        for item in &batch {
            if let Simulated::Reading(reading) = item {
                let index = reading.utility.index();
                builders[index].push(reading, next_offsets[index] + builders[index].len() as u64);
                if builders[index].len() >= rows_per_file {
                    written.bytes += flush(reading.utility, &mut builders[index], &mut next_offsets[index])?;
                    written.files += 1;
                }
            }
        }
        written.readings += batch.len() as u64;
        bar.inc(batch.len() as u64);
    }
    for utility in Utility::ALL {
        let index = utility.index();
        if !builders[index].is_empty() {
            written.bytes += flush(utility, &mut builders[index], &mut next_offsets[index])?;
            written.files += 1;
        }
    }
    Ok(written)
}
