//! The DataFusion part: one query per utility over a day's master data files.

use auth_core::{Region, Utility};
use auth_master::{MasterStore, date_folder};
use chrono::NaiveDate;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, UInt64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::fold::{CustomerHour, DayFold, DayOutputs};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("no master data for {date} under {location} (looked for readings/utility=<u>/date={date}/*.parquet)")]
    NoInput { date: NaiveDate, location: String },
    #[error("listing the master data under {location}: {source}")]
    List { location: String, source: object_store::Error },
    #[error("master data file {path} is unreadable: {message}")]
    Unreadable { path: String, message: String },
    #[error("query engine: {0}")]
    Engine(#[from] DataFusionError),
    #[error("the query returned {what}")]
    Shape { what: String },
    #[error("reading the query's results: {0}")]
    Arrow(#[from] ArrowError),
}

/// The query over one utility's readings of one day: the first copy of a
/// repeated reading (same meter and event time, lowest log offset) counts, as
/// in the stream; then each customer's sums per UTC hour.
const CUSTOMER_HOURS: &str = "
SELECT customer_id, CAST(region AS VARCHAR) AS region, hour,
       sum(value) AS total, min(value) AS min_value, max(value) AS max_value, count(*) AS readings
FROM (
    SELECT customer_id, region, CAST(date_part('hour', ts) AS INT) AS hour,
           first_value(value ORDER BY log_offset) AS value
    FROM day
    GROUP BY customer_id, region, meter_id, ts
)
GROUP BY customer_id, region, hour";

/// Runs the day's query against the master data.
pub struct BatchJob {
    master: MasterStore,
    memory_limit_bytes: u64,
}

impl BatchJob {
    /// A job over `master` whose query engine keeps within `memory_limit_bytes`
    /// (spilling to the system's temporary directory beyond it).
    pub fn new(master: MasterStore, memory_limit_bytes: u64) -> Self {
        Self { master, memory_limit_bytes }
    }

    fn context(&self) -> Result<SessionContext, BatchError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(usize::try_from(self.memory_limit_bytes).unwrap_or(usize::MAX), 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default())
            .build_arc()?;
        let config = SessionConfig::new().with_information_schema(false);
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

    /// Computes the day for `utilities`; `NoInput` when none of them has a file.
    #[tracing::instrument(level = "info", skip(self, utilities), fields(%date))]
    pub async fn compute(&self, date: NaiveDate, utilities: &[Utility]) -> Result<DayOutputs, BatchError> {
        let mut fold = DayFold::default();
        let mut any_input = false;
        for &utility in utilities {
            let files = self.files(utility, date).await?;
            if files.is_empty() {
                continue;
            }
            any_input = true;
            for path in &files {
                self.check_footer(path).await?;
            }
            if let Err(err) = self.fold_utility(utility, date, &mut fold).await {
                return Err(self.name_unreadable_file(&files).await.unwrap_or(err));
            }
        }
        if !any_input {
            return Err(BatchError::NoInput { date, location: self.master.location().to_owned() });
        }
        Ok(fold.finish())
    }

    async fn fold_utility(&self, utility: Utility, date: NaiveDate, fold: &mut DayFold) -> Result<(), BatchError> {
        let context = self.context()?;
        let folder = self.master.folder_url(&date_folder(utility, date));
        let schema = auth_master::schema();
        let options = ParquetReadOptions::default().schema(&schema).file_extension(".parquet");
        context.register_parquet("day", folder.as_str(), options).await?;
        let mut batches = context.sql(CUSTOMER_HOURS).await?.execute_stream().await?;
        let mut rows = 0u64;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            rows += batch.num_rows() as u64;
            fold_batch(utility, &batch, fold)?;
        }
        drop(batches);
        tracing::info!(%utility, customer_hours = rows, "utility computed");
        Ok(())
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

fn fold_batch(utility: Utility, batch: &RecordBatch, fold: &mut DayFold) -> Result<(), BatchError> {
    let shape = |what: &str| BatchError::Shape { what: what.to_owned() };
    let column = |index: usize| batch.columns().get(index).ok_or_else(|| shape("too few columns"));
    let customers = column(0)?.as_primitive_opt::<UInt64Type>().ok_or_else(|| shape("customer_id of another type"))?;
    let regions = cast(column(1)?, &DataType::Utf8)?;
    let regions = regions.as_string_opt::<i32>().ok_or_else(|| shape("region of another type"))?;
    let hours = column(2)?.as_primitive_opt::<Int32Type>().ok_or_else(|| shape("hour of another type"))?;
    let totals = column(3)?.as_primitive_opt::<Float64Type>().ok_or_else(|| shape("total of another type"))?;
    let mins = column(4)?.as_primitive_opt::<Float64Type>().ok_or_else(|| shape("min of another type"))?;
    let maxes = column(5)?.as_primitive_opt::<Float64Type>().ok_or_else(|| shape("max of another type"))?;
    let counts = column(6)?.as_primitive_opt::<Int64Type>().ok_or_else(|| shape("count of another type"))?;
    for row in 0..batch.num_rows() {
        let region = Region::from_code(regions.value(row))
            .ok_or_else(|| BatchError::Shape { what: format!("an unknown region {:?}", regions.value(row)) })?;
        fold.add(CustomerHour {
            utility,
            customer_id: customers.value(row),
            region,
            hour: u8::try_from(hours.value(row)).map_err(|_| shape("an hour out of range"))?,
            total: totals.value(row),
            min_value: mins.value(row),
            max_value: maxes.value(row),
            readings: u64::try_from(counts.value(row)).unwrap_or(0),
        });
    }
    Ok(())
}
