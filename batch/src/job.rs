//! The DataFusion part: per utility and log partition, a query that merges the
//! day's files in the master data's order, folded as it streams.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use auth_core::spec::{EstimationSpec, ValidationSpec};
use auth_core::local_day::{LocalDays, time_of_day_ms};
use auth_core::{Region, Utility};
use auth_master::{FileName, MasterStore, date_folder};
use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int8Type, TimestampMillisecondType, UInt64Type};
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{Expr, ParquetReadOptions, SessionConfig, SessionContext, col, lit};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::completeness::Expectations;
use crate::edits::Edits;
use crate::estimate::{Estimator, Profiles};
use crate::fold::{DayFold, DayOutputs, OutOfOrder, ReadingFold, ReadingKey};
use crate::registers::PreviousRegisters;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("no master data for the local day {date} under {location} (looked for readings/utility=<u>/date=<{folders}>/*.parquet)")]
    NoInput { date: NaiveDate, folders: String, location: String },
    #[error("listing the master data under {location}: {source}")]
    List { location: String, source: object_store::Error },
    #[error("master data file {path} is unreadable: {message}")]
    Unreadable { path: String, message: String },
    #[error("query engine: {0}")]
    Engine(#[from] DataFusionError),
    #[error("master data files {files:?}: {source}")]
    OutOfOrder { files: Vec<String>, source: OutOfOrder },
    #[error("a partition's fold stopped: {0}")]
    Task(String),
    #[error("the query returned {what}")]
    Shape { what: String },
}

/// The columns the batch reads, in the master data's order: DataFusion merges
/// a partition's files on it, without sorting, and [`ReadingFold`] folds the
/// merged stream in one pass.
const COLUMNS: &str = "customer_id, region, meter_id, ts, value, log_offset";
const ORDER: [&str; 4] = ["customer_id", "meter_id", "ts", "log_offset"];

/// The day computed, and what the results database says of it besides its readings.
#[derive(Debug, Clone)]
pub struct DayInputs {
    /// The date's local day in each region: a customer's readings of it
    /// are those of its region's day ([`auth_core::local_day`]).
    pub days: Arc<LocalDays>,
    /// What the registry expects of each meter ([`crate::completeness`]).
    pub expectations: Arc<Expectations>,
    /// The operators' edits and approvals in force ([`crate::edits`]).
    pub edits: Arc<Edits>,
}

impl DayInputs {
    /// `date` with nothing expected and no edits.
    pub fn new(date: NaiveDate) -> Self {
        Self { days: Arc::new(LocalDays::of(date)), expectations: Arc::default(), edits: Arc::default() }
    }
}

/// The UTC dates, and so the master data's date folders, that hold the instants of `span`.
fn utc_dates(span: Range<i64>) -> impl Iterator<Item = NaiveDate> {
    let (first, last) = (auth_master::date_of(span.start), auth_master::date_of(span.end.saturating_sub(1).max(span.start)));
    first.iter_days().take_while(move |date| *date <= last)
}

/// One utility's files of one log partition on one day: a customer's
/// readings are all in one partition, so each is folded on its own.
struct PartitionFiles {
    utility: Utility,
    partition: u32,
    files: Vec<Path>,
    inputs: DayInputs,
    estimator: Estimator,
    /// When set, the only customers folded.
    only: Option<Arc<FxHashSet<u64>>>,
    /// The cumulative meters' last registers of the day before.
    previous_registers: Arc<PreviousRegisters>,
}

/// Runs the day's queries against the master data.
#[derive(Clone)]
pub struct BatchJob {
    master: MasterStore,
    memory_limit_bytes: u64,
    parallelism: usize,
    validation: ValidationSpec,
    estimation: EstimationSpec,
}

impl BatchJob {
    /// A job over `master` whose queries together keep within
    /// `memory_limit_bytes`; it folds as many partitions at once as there are cores.
    /// It validates with the default rules ([`BatchJob::with_validation`])
    /// and estimates by the default settings ([`BatchJob::with_estimation`]).
    pub fn new(master: MasterStore, memory_limit_bytes: u64) -> Self {
        let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
        Self { master, memory_limit_bytes, parallelism, validation: ValidationSpec::default(), estimation: EstimationSpec::default() }
    }

    /// The job estimating missing intervals by `settings` (`batch.estimation`).
    pub fn with_estimation(self, settings: EstimationSpec) -> Self {
        Self { estimation: settings, ..self }
    }

    /// The job flagging suspect intervals by `rules` (`batch.validation`).
    pub fn with_validation(self, rules: ValidationSpec) -> Self {
        Self { validation: rules, ..self }
    }

    fn context(&self) -> Result<SessionContext, BatchError> {
        let share = self.memory_limit_bytes / self.parallelism as u64;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(usize::try_from(share).unwrap_or(usize::MAX), 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default())
            .build_arc()?;
        let config = SessionConfig::new().with_information_schema(false).with_target_partitions(1);
        let context = SessionContext::new_with_config_rt(config, runtime);
        context.register_object_store(self.master.base_url(), self.master.object_store());
        Ok(context)
    }

    /// The day's files of one utility.
    pub async fn files(&self, utility: Utility, date: NaiveDate) -> Result<Vec<Path>, BatchError> {
        let folder = self.master.path(&date_folder(utility, date));
        let listed: Vec<_> = self.master.object_store().list(Some(&folder)).collect().await;
        let mut files = Vec::new();
        for item in listed {
            let meta = item.map_err(|source| BatchError::List { location: self.master.location().to_owned(), source })?;
            if meta.location.extension() == Some("parquet") {
                files.push(meta.location);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Computes the local day `date` for `utilities`: each customer's
    /// readings in its region's day, from the UTC date folders that hold
    /// any region's day. With the operators' edits of
    /// `inputs` applied, how complete it is against its expectations, and
    /// the estimates of what the meters missed; `NoInput` when none of the
    /// utilities has a file.
    ///
    /// The partitions are folded once; customers whose gaps need profiles
    /// are deferred, and once the profiles of those customers (and of the
    /// customers that sent nothing) are read from the previous weeks, their
    /// partitions are folded again for them alone.
    #[tracing::instrument(level = "info", skip(self, utilities, inputs), fields(%date, expected_meters = inputs.expectations.len()))]
    pub async fn compute(&self, date: NaiveDate, utilities: &[Utility], inputs: DayInputs) -> Result<DayOutputs, BatchError> {
        let mut partitions: BTreeMap<(Utility, u32), Vec<Path>> = BTreeMap::new();
        let folders: Vec<NaiveDate> = utc_dates(inputs.days.span()).collect();
        for &utility in utilities {
            let mut files = Vec::new();
            for &folder in &folders {
                files.extend(self.files(utility, folder).await?);
            }
            for path in files {
                self.check_footer(&path).await?;
                let name = path.filename().and_then(FileName::parse).ok_or_else(|| BatchError::Unreadable {
                    path: path.to_string(),
                    message: "its name is not part-<partition>-<first offset>.parquet".into(),
                })?;
                partitions.entry((utility, name.partition)).or_default().push(path);
            }
        }
        if partitions.is_empty() {
            let folders = folders.iter().map(NaiveDate::to_string).collect::<Vec<_>>().join("|");
            return Err(BatchError::NoInput { date, folders, location: self.master.location().to_owned() });
        }
        let estimator = Estimator::new(self.estimation);
        let mut previous_registers: FxHashMap<Utility, Arc<PreviousRegisters>> = FxHashMap::default();
        for &utility in utilities {
            let meters: FxHashMap<(u64, u64), Region> = inputs.expectations.cumulative_meters(utility).collect();
            if !meters.is_empty() {
                previous_registers.insert(utility, Arc::new(self.previous_registers(&inputs.days, utility, &meters).await?));
            }
        }
        let registers_of = |utility: Utility| previous_registers.get(&utility).cloned().unwrap_or_default();
        let all: Vec<PartitionFiles> = partitions
            .iter()
            .map(|(&(utility, partition), files)| PartitionFiles {
                utility,
                partition,
                files: files.clone(),
                inputs: inputs.clone(),
                estimator: estimator.clone(),
                only: None,
                previous_registers: registers_of(utility),
            })
            .collect();
        let mut day = DayFold::default();
        let mut deferred: BTreeMap<(Utility, u32), FxHashSet<u64>> = BTreeMap::new();
        for ((utility, partition), fold) in self.fold_partitions(all).await? {
            if !fold.deferred.is_empty() {
                deferred.entry((utility, partition)).or_default().extend(fold.deferred.iter().map(|&(_, customer_id)| customer_id));
            }
            day.merge(fold);
        }
        let silent = inputs.expectations.unvisited_customers();
        let without_readings: Vec<(Utility, Vec<(u64, Region)>)> = utilities
            .iter()
            .map(|&utility| (utility, day.customers_without_readings(&inputs.edits, &silent, utility)))
            .filter(|(_, customers)| !customers.is_empty())
            .collect();
        day.deferred.clear();
        let mut profiled: FxHashMap<Utility, Vec<u64>> = FxHashMap::default();
        for (&(utility, _), customers) in &deferred {
            profiled.entry(utility).or_default().extend(customers);
        }
        if estimator.profile_weeks() > 0 {
            for (utility, customers) in &without_readings {
                profiled.entry(*utility).or_default().extend(customers.iter().map(|&(customer_id, _)| customer_id));
            }
        }
        let estimator = match profiled.is_empty() {
            true => estimator,
            false => estimator.with_profiles(Arc::new(self.profiles(&inputs.days, &profiled, &inputs.expectations).await?)),
        };
        let again: Vec<PartitionFiles> = deferred
            .into_iter()
            .map(|((utility, partition), customers)| PartitionFiles {
                utility,
                partition,
                files: partitions.get(&(utility, partition)).cloned().unwrap_or_default(),
                inputs: inputs.clone(),
                estimator: estimator.clone(),
                only: Some(Arc::new(customers)),
                previous_registers: registers_of(utility),
            })
            .collect();
        for (_, fold) in self.fold_partitions(again).await? {
            day.merge(fold);
        }
        for (utility, customers) in without_readings {
            let mut fold = ReadingFold::new(utility, inputs.clone(), self.validation).with_estimator(estimator.clone());
            for (customer_id, region) in customers {
                fold.push_customer_without_readings(customer_id, region);
            }
            day.merge(fold.finish());
        }
        Ok(day.finish())
    }

    /// Folds `partitions`, as many at once as there are cores.
    async fn fold_partitions(&self, partitions: Vec<PartitionFiles>) -> Result<Vec<((Utility, u32), DayFold)>, BatchError> {
        let folds = partitions.into_iter().map(|part| {
            let job = self.clone();
            tokio::spawn(async move { ((part.utility, part.partition), job.fold_partition(&part).await) })
        });
        let mut folds = futures::stream::iter(folds).buffer_unordered(self.parallelism);
        let mut folded = Vec::new();
        while let Some(fold) = folds.next().await {
            let (key, fold) = fold.map_err(|err| BatchError::Task(err.to_string()))?;
            folded.push((key, fold?));
        }
        Ok(folded)
    }

    /// The last register, on the local day before `days`, of each of
    /// `meters` (customer and meter, with its region) that read then: the
    /// first copy of its newest.
    #[tracing::instrument(level = "info", skip(self, days, meters), fields(date = %days.date(), %utility, meters = meters.len()))]
    async fn previous_registers(&self, days: &LocalDays, utility: Utility, meters: &FxHashMap<(u64, u64), Region>) -> Result<PreviousRegisters, BatchError> {
        let mut registers: FxHashMap<(u64, u64), (i64, u64, f64)> = FxHashMap::default();
        let Some(before) = days.date().pred_opt() else { return Ok(PreviousRegisters::default()) };
        let before = LocalDays::of(before);
        self.for_each_reading(utility, before.span(), None, |customer_id, meter_id, ts_ms, value, log_offset| {
            if !meters.get(&(customer_id, meter_id)).is_some_and(|&region| before.contains(region, ts_ms)) {
                return;
            }
            let newest = registers.entry((customer_id, meter_id)).or_insert((ts_ms, log_offset, value));
            if (ts_ms, std::cmp::Reverse(log_offset)) > (newest.0, std::cmp::Reverse(newest.1)) {
                *newest = (ts_ms, log_offset, value);
            }
        })
        .await?;
        tracing::info!(registers = registers.len(), "previous day's registers read");
        Ok(registers.into_iter().map(|(key, (ts_ms, _, value))| (key, (ts_ms, value))).collect())
    }

    /// Calls `each` with every reading of `utility` in the date folders
    /// that hold `span` (of the `customers` listed only, when given), in no
    /// particular order: customer, meter, event time, value and log offset.
    async fn for_each_reading(
        &self,
        utility: Utility,
        span: Range<i64>,
        customers: Option<&[Expr]>,
        mut each: impl FnMut(u64, u64, i64, f64, u64),
    ) -> Result<(), BatchError> {
        let mut files = Vec::new();
        for date in utc_dates(span) {
            files.extend(self.files(utility, date).await?);
        }
        if files.is_empty() {
            return Ok(());
        }
        let urls: Vec<String> = files.iter().map(|path| self.master.object_url(path)).collect();
        let schema = auth_master::schema();
        let mut frame = self.context()?.read_parquet(urls, ParquetReadOptions::default().schema(&schema)).await?;
        if let Some(customers) = customers {
            frame = frame.filter(col("customer_id").in_list(customers.to_vec(), false))?;
        }
        let mut batches = frame.select_columns(&["customer_id", "meter_id", "ts", "value", "log_offset"])?.execute_stream().await?;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let shape = |what: &str| BatchError::Shape { what: what.to_owned() };
            let customer_ids = batch.column(0).as_primitive_opt::<UInt64Type>().ok_or_else(|| shape("customer_id of another type"))?;
            let meter_ids = batch.column(1).as_primitive_opt::<UInt64Type>().ok_or_else(|| shape("meter_id of another type"))?;
            let times = batch.column(2).as_primitive_opt::<TimestampMillisecondType>().ok_or_else(|| shape("ts of another type"))?;
            let values = batch.column(3).as_primitive_opt::<Float64Type>().ok_or_else(|| shape("value of another type"))?;
            let offsets = batch.column(4).as_primitive_opt::<UInt64Type>().ok_or_else(|| shape("log_offset of another type"))?;
            for row in 0..batch.num_rows() {
                each(customer_ids.value(row), meter_ids.value(row), times.value(row), values.value(row), offsets.value(row));
            }
        }
        Ok(())
    }

    /// The profiles of `customers`' meters: their readings on the same
    /// weekday of each of the `profileWeeks` weeks before the day, summed
    /// per meter and local time of day (a cumulative meter's: its
    /// registers' advances, shared by the intervals they span).
    #[tracing::instrument(level = "info", skip_all, fields(date = %days.date(), customers = customers.values().map(Vec::len).sum::<usize>()))]
    async fn profiles(&self, days: &LocalDays, customers: &FxHashMap<Utility, Vec<u64>>, expectations: &Expectations) -> Result<Profiles, BatchError> {
        let date = days.date();
        let mut profiles = Profiles::default();
        let weeks = self.estimation.profile_weeks;
        for (&utility, customer_ids) in customers {
            let wanted: Vec<_> = customer_ids.iter().map(|&customer_id| lit(customer_id)).collect();
            let intervals: FxHashMap<(u64, u64), (i64, bool, Region)> = customer_ids
                .iter()
                .flat_map(|&customer_id| expectations.meters_of(utility, customer_id))
                .map(|position| expectations.meter(position))
                .map(|meter| ((meter.customer_id, meter.meter_id), (meter.interval_ms, !meter.registers.is_empty(), meter.region)))
                .collect();
            for week in 1..=u64::from(weeks) {
                let Some(then) = date.checked_sub_days(Days::new(7 * week)) else { break };
                let then = LocalDays::of(then);
                let mut readings: FxHashMap<(u64, u64, i64), f64> = FxHashMap::default();
                self.for_each_reading(utility, then.span(), Some(&wanted), |customer_id, meter_id, ts_ms, value, _| {
                    if intervals.get(&(customer_id, meter_id)).is_some_and(|&(_, _, region)| then.contains(region, ts_ms)) {
                        readings.entry((customer_id, meter_id, ts_ms)).or_insert(value);
                    }
                })
                .await?;
                let mut slots: FxHashMap<(u64, u64, i64), f64> = FxHashMap::default();
                let mut registers: Vec<((u64, u64, i64), f64)> = Vec::new();
                for ((customer_id, meter_id, ts_ms), value) in readings {
                    let Some(&(interval_ms, cumulative, region)) = intervals.get(&(customer_id, meter_id)) else { continue };
                    if cumulative {
                        registers.push(((customer_id, meter_id, ts_ms), value));
                        continue;
                    }
                    let phase_ms = then.range(region).start.rem_euclid(interval_ms);
                    let offset_ms = time_of_day_ms(region, ts_ms - (ts_ms - phase_ms).rem_euclid(interval_ms));
                    *slots.entry((customer_id, meter_id, offset_ms)).or_default() += value;
                }
                registers.sort_unstable_by_key(|&(key, _)| key);
                for pair in registers.windows(2) {
                    let (((customer_id, meter_id, before_ms), before), ((next_customer, next_meter, ts_ms), register)) = (pair[0], pair[1]);
                    let Some(&(interval_ms, _, region)) = intervals.get(&(customer_id, meter_id)) else { continue };
                    if (customer_id, meter_id) != (next_customer, next_meter) || register < before {
                        continue;
                    }
                    // A register's advance is shared by the intervals since the one before, as the day's fold shares it.
                    let phase_ms = then.range(region).start.rem_euclid(interval_ms);
                    let (first, last) = ((before_ms - phase_ms).div_euclid(interval_ms) + 1, (ts_ms - phase_ms).div_euclid(interval_ms));
                    let share = (register - before) / (last - first + 1).max(1) as f64;
                    for slot in first..=last {
                        let offset_ms = time_of_day_ms(region, slot * interval_ms + phase_ms);
                        *slots.entry((customer_id, meter_id, offset_ms)).or_default() += share;
                    }
                }
                profiles.add_week(utility, slots);
            }
        }
        tracing::info!(slots = profiles.len(), "profiles read");
        Ok(profiles)
    }

    /// Folds one partition; when the query engine fails, reads its files one
    /// by one to name the bad one.
    async fn fold_partition(&self, part: &PartitionFiles) -> Result<DayFold, BatchError> {
        match self.merge_and_fold(part).await {
            Err(err @ BatchError::Engine(_)) => Err(self.name_unreadable_file(&part.files).await.unwrap_or(err)),
            outcome => outcome,
        }
    }

    async fn merge_and_fold(&self, part: &PartitionFiles) -> Result<DayFold, BatchError> {
        let context = self.context()?;
        let schema = auth_master::schema();
        let order = vec![ORDER.iter().map(|column| col(*column).sort(true, false)).collect::<Vec<_>>()];
        let mut selects = Vec::new();
        for (index, path) in part.files.iter().enumerate() {
            let options = ParquetReadOptions::default().schema(&schema).file_sort_order(order.clone());
            context.register_parquet(format!("file{index}"), self.master.object_url(path), options).await?;
            selects.push(format!("SELECT {COLUMNS} FROM file{index}"));
        }
        let query = format!("SELECT * FROM ({}) ORDER BY {}", selects.join(" UNION ALL "), ORDER.join(", "));
        let mut batches = context.sql(&query).await?.execute_stream().await?;
        let mut fold = ReadingFold::new(part.utility, part.inputs.clone(), self.validation)
            .with_estimator(part.estimator.clone())
            .with_previous_registers(Arc::clone(&part.previous_registers));
        if let Some(only) = &part.only {
            fold = fold.only(Arc::clone(only));
        }
        let mut rows = 0u64;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            fold_batch(&batch, &mut fold, &part.files)?;
        }
        tracing::debug!(utility = %part.utility, partition = part.partition, rows, "partition folded");
        Ok(fold.finish())
    }

    /// Checks that a file ends as Parquet does (metadata length, then `PAR1`)
    /// with a length that fits the file: a truncated or foreign file is named
    /// before the query engine reads it.
    async fn check_footer(&self, path: &Path) -> Result<(), BatchError> {
        let unreadable = |message: String| BatchError::Unreadable { path: path.to_string(), message };
        let store = self.master.object_store();
        let size = store.head(path).await.map_err(|err| unreadable(err.to_string()))?.size;
        if size < 12 {
            return Err(unreadable(format!("{size} bytes is too short for Parquet")));
        }
        let tail = store.get_range(path, size - 8..size).await.map_err(|err| unreadable(err.to_string()))?;
        if &tail[4..] != b"PAR1" {
            return Err(unreadable("it does not end with Parquet's magic bytes".into()));
        }
        let metadata_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if metadata_len + 12 > size {
            return Err(unreadable(format!("its footer claims {metadata_len} bytes of metadata in a {size}-byte file")));
        }
        Ok(())
    }

    /// Reads each file on its own to name the one that fails, if one does.
    async fn name_unreadable_file(&self, files: &[Path]) -> Option<BatchError> {
        let context = self.context().ok()?;
        for path in files {
            let url = self.master.object_url(path);
            let schema = auth_master::schema();
            let options = ParquetReadOptions::default().schema(&schema);
            let outcome = match context.read_parquet(url.as_str(), options).await {
                Ok(frame) => frame.collect().await.map(drop),
                Err(err) => Err(err),
            };
            if let Err(err) = outcome {
                return Some(BatchError::Unreadable { path: path.to_string(), message: err.to_string() });
            }
        }
        None
    }
}

/// Feeds a batch of `COLUMNS`, merged from `files`, to the fold.
fn fold_batch(batch: &RecordBatch, fold: &mut ReadingFold, files: &[Path]) -> Result<(), BatchError> {
    let shape = |what: &str| BatchError::Shape { what: what.to_owned() };
    let column = |index: usize| batch.columns().get(index).ok_or_else(|| shape("too few columns"));
    let customers = column(0)?.as_primitive_opt::<UInt64Type>().ok_or_else(|| shape("customer_id of another type"))?;
    let regions = column(1)?.as_dictionary_opt::<Int8Type>().ok_or_else(|| shape("region of another type"))?;
    let meters = column(2)?.as_primitive_opt::<UInt64Type>().ok_or_else(|| shape("meter_id of another type"))?;
    let times = column(3)?.as_primitive_opt::<TimestampMillisecondType>().ok_or_else(|| shape("ts of another type"))?;
    let values = column(4)?.as_primitive_opt::<Float64Type>().ok_or_else(|| shape("value of another type"))?;
    let offsets = column(5)?.as_primitive_opt::<UInt64Type>().ok_or_else(|| shape("log_offset of another type"))?;
    let codes = regions.values().as_string_opt::<i32>().ok_or_else(|| shape("region codes of another type"))?;
    let known: Vec<Option<Region>> = codes.iter().map(|code| code.and_then(Region::from_code)).collect();
    for row in 0..batch.num_rows() {
        let index = usize::try_from(regions.keys().value(row)).ok();
        let region = index.and_then(|index| known.get(index).copied().flatten()).ok_or_else(|| BatchError::Shape {
            what: format!("a region that is not a known code (dictionary key {})", regions.keys().value(row)),
        })?;
        let key = ReadingKey {
            customer_id: customers.value(row),
            meter_id: meters.value(row),
            ts_ms: times.value(row),
            log_offset: offsets.value(row),
        };
        fold.push(key, region, values.value(row))
            .map_err(|source| BatchError::OutOfOrder { files: files.iter().map(Path::to_string).collect(), source })?;
    }
    Ok(())
}
