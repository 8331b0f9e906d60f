//! `auth registry import|export FILE`: the meter registry in CSV or Parquet,
//! kept in the results database; and the publisher that sends its changes to
//! the `<pipeline>.registry` topic, which the gateways follow.
//!
//! A file has one installation per row, with these columns (CSV: a header
//! line naming them, in any order):
//!
//! | column | example | |
//! |---|---|---|
//! | `meter_id` | `40012` | the id the meter sends |
//! | `customer_id` | `10003` | |
//! | `premise_id` | `SP-88-1203` | the place (service point) |
//! | `region` | `US-CA` | ISO 3166-2 |
//! | `utility` | `electricity` | electricity, gas, water |
//! | `customer_kind` | `residential` | residential, business |
//! | `unit` | `kWh` | Wh, kWh, MWh; L, m3 |
//! | `multiplier` | `1` | the meter's values times this, then the unit |
//! | `register` | `interval` | interval: each value is one interval's consumption; cumulative: the meter's register |
//! | `interval_secs` | `900` | how often it reads; divides a day |
//! | `valid_from` | `2026-01-01` | RFC 3339 or a date (UTC midnight) |
//! | `valid_to` | | exclusive; empty: still installed |
//! | `plausible_min` | | the least one interval may read, in `unit`; empty: no bound |
//! | `plausible_max` | `5` | the most one interval may read, in `unit`; empty: no bound |
//! | `register_rollover` | `100000` | where a cumulative register wraps to 0, in `unit`; empty: it does not wrap |
//!
//! The last four columns may be left out. A reading outside the plausible
//! bounds is flagged `suspect` (rule `range`) by the batch. A cumulative
//! meter's consecutive registers become its intervals' consumption
//! (`auth_batch::registers`).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType};
use auth_core::registry::{BadRow, Installation, MeterUnit, RegisterKind, Registry};
use auth_core::ports::LogProducer;
use auth_core::{CustomerKind, Region, Utility};
use auth_ingest::registry_feed::LiveRegistry;
use auth_results::Database;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use clap::{Args, Subcommand};

/// The columns of a registry file, in the order `export` writes them.
pub const COLUMNS: [&str; 15] = [
    "meter_id", "customer_id", "premise_id", "region", "utility", "customer_kind", "unit", "multiplier", "register", "interval_secs",
    "valid_from", "valid_to", "plausible_min", "plausible_max", "register_rollover",
];

/// The columns a file may leave out (or leave empty).
const OPTIONAL_COLUMNS: [&str; 4] = ["valid_to", "plausible_min", "plausible_max", "register_rollover"];

/// How often a simulated meter reads, as its installation says: every 15
/// minutes, as interval meters commonly do. The live simulator reports every
/// heartbeat (more often) and the backfilled history once per interval; both
/// fill every interval the batch's completeness expects.
pub const SIMULATED_INTERVAL_SECS: u32 = 900;

/// How often the publisher looks for a newer revision of the registry.
const PUBLISH_EVERY: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: RegistryCommand,
    /// Pipeline spec (YAML) naming the results database (`batch.databaseUrl`).
    #[arg(long, env = "AUTH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The results database instead of the spec's `batch.databaseUrl`.
    #[arg(long, env = "AUTH_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Pipeline name: an import is sent to its topic `<pipeline>.registry` at once when the log is Kafka.
    #[arg(long, env = "AUTH_PIPELINE", default_value = "auth", global = true)]
    pipeline: String,
    /// Kafka to use instead of the spec's `log.url`, `kafka://host:port[,host:port]`.
    #[arg(long, env = "AUTH_KAFKA_URL", global = true)]
    kafka_url: Option<String>,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Imports installations from a CSV or Parquet file (by its extension):
    /// every row is checked first, and any bad row stops the import with its
    /// line and reason, nothing imported. The file's meters get exactly the
    /// file's installations; other meters are kept unless `--replace`.
    Import {
        file: PathBuf,
        /// Remove every meter the file does not hold.
        #[arg(long)]
        replace: bool,
    },
    /// Writes every installation to a CSV or Parquet file (by its extension).
    Export { file: PathBuf },
}

pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let mut spec = crate::common::load_spec(args.config.as_deref())?;
    if let Some(url) = args.database_url {
        spec.batch.database_url = url;
    }
    if let Some(url) = args.kafka_url {
        spec.log.url = Some(url);
    }
    let db = Database::connect(&spec.batch.database_url).await.context("batch.databaseUrl / --database-url")?;
    match args.command {
        RegistryCommand::Import { file, replace } => {
            let registry = read_file(&file)?;
            let imported = import(&db, &spec, &args.pipeline, &registry, replace).await?;
            println!(
                "imported {} installations of {} meters from {} as revision {}{}",
                imported.installations,
                imported.meters,
                file.display(),
                imported.revision,
                if replace { format!("; {} meters not in the file removed", imported.removed) } else { String::new() }
            );
        }
        RegistryCommand::Export { file } => {
            let registry = db.registry().await?;
            let installations = registry.installations();
            write_file(&file, &installations)?;
            println!("exported {} installations of {} meters to {}", installations.len(), registry.meter_count(), file.display());
        }
    }
    Ok(())
}

/// Stores `registry` in the database and, when the log is Kafka, sends the
/// changed meters to the registry topic at once (without Kafka, the
/// publisher of `auth api` or `auth up` sends them within seconds).
pub async fn import(
    db: &Database,
    spec: &auth_core::PipelineSpec,
    pipeline: &str,
    registry: &Registry,
    replace: bool,
) -> anyhow::Result<auth_results::Imported> {
    let imported = db.import_registry(registry, replace, auth_core::now_ms()).await?;
    if spec.log.url.is_some() {
        let log = auth_adapters::log(spec, "registry", auth_adapters::Embedded::Refused)?;
        let topic = auth_core::registry_topic(pipeline);
        log.ensure_compacted_topic(&topic).await.with_context(|| format!("creating topic {topic}"))?;
        publish_changes(db, log.producer()?.as_ref(), &topic, imported.revision - 1).await?;
    }
    Ok(imported)
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Format {
    Csv,
    Parquet,
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    match path.extension().and_then(|extension| extension.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("csv") => Ok(Format::Csv),
        Some("parquet") => Ok(Format::Parquet),
        _ => anyhow::bail!("{}: expected a .csv or .parquet file", path.display()),
    }
}

/// Reads and checks a registry file; every bad row is in the error, with its line.
pub fn read_file(path: &Path) -> anyhow::Result<Registry> {
    let rows = match format_of(path)? {
        Format::Csv => read_csv(path)?,
        Format::Parquet => read_parquet(path)?,
    };
    Registry::from_rows(rows).map_err(|bad| anyhow::anyhow!("{}: nothing imported:\n{}", path.display(), report(&bad)))
}

fn report(bad: &[BadRow]) -> String {
    bad.iter().map(|row| format!("  {row}")).collect::<Vec<_>>().join("\n")
}

/// Writes installations to a registry file.
pub fn write_file(path: &Path, installations: &[&Installation]) -> anyhow::Result<()> {
    match format_of(path)? {
        Format::Csv => write_csv(path, installations),
        Format::Parquet => write_parquet(path, installations),
    }
}

/// One row's fields by column name, as text.
fn installation_of(field: impl Fn(&str) -> Option<String>) -> Result<Installation, String> {
    let mut problems = Vec::new();
    let mut text = |column: &str| match field(column).map(|value| value.trim().to_owned()) {
        Some(value) if !value.is_empty() => Some(value),
        _ => {
            if !OPTIONAL_COLUMNS.contains(&column) {
                problems.push(format!("{column} is missing"));
            }
            None
        }
    };
    let (plausible_min, plausible_max, rollover) = (text("plausible_min"), text("plausible_max"), text("register_rollover"));
    let (meter_id, customer_id, premise_id, region, utility, kind, unit, multiplier, register, interval, from, to) = (
        text("meter_id"),
        text("customer_id"),
        text("premise_id"),
        text("region"),
        text("utility"),
        text("customer_kind"),
        text("unit"),
        text("multiplier"),
        text("register"),
        text("interval_secs"),
        text("valid_from"),
        text("valid_to"),
    );
    fn parsed<T>(problems: &mut Vec<String>, value: Option<String>, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let value = value?;
        parse(&value).map_err(|problem| problems.push(problem)).ok()
    }
    let number = |column: &'static str| move |text: &str| text.parse::<u64>().map_err(|_| format!("{column} `{text}` is not a whole number"));
    let meter_id = parsed(&mut problems, meter_id, number("meter_id"));
    let customer_id = parsed(&mut problems, customer_id, number("customer_id"));
    let region = parsed(&mut problems, region, |code| {
        Region::from_code(code).ok_or_else(|| format!("unknown region `{code}` (expected an ISO 3166-2 code, e.g. US-CA)"))
    });
    let utility = parsed(&mut problems, utility, |name| name.parse::<Utility>().map_err(|err| err.to_string()));
    let customer_kind = parsed(&mut problems, kind, |name| match name {
        "residential" => Ok(CustomerKind::Residential),
        "business" => Ok(CustomerKind::Business),
        other => Err(format!("unknown customer kind `{other}` (expected residential or business)")),
    });
    let unit = parsed(&mut problems, unit, str::parse::<MeterUnit>);
    let multiplier = parsed(&mut problems, multiplier, |text| text.parse::<f64>().map_err(|_| format!("multiplier `{text}` is not a number")));
    let register = parsed(&mut problems, register, str::parse::<RegisterKind>);
    let interval_secs = parsed(&mut problems, interval, |text| {
        text.parse::<u32>().map_err(|_| format!("interval_secs `{text}` is not a whole number of seconds"))
    });
    let valid_from_ms = parsed(&mut problems, from, |text| instant_ms("valid_from", text));
    let valid_to_ms = parsed(&mut problems, to, |text| instant_ms("valid_to", text));
    let bound = |column: &'static str| move |text: &str| text.parse::<f64>().map_err(|_| format!("{column} `{text}` is not a number"));
    let plausible_min = parsed(&mut problems, plausible_min, bound("plausible_min"));
    let plausible_max = parsed(&mut problems, plausible_max, bound("plausible_max"));
    let register_rollover = parsed(&mut problems, rollover, bound("register_rollover"));
    match (meter_id, customer_id, premise_id, region, utility, customer_kind, unit, multiplier, register, interval_secs, valid_from_ms) {
        (
            Some(meter_id),
            Some(customer_id),
            Some(premise_id),
            Some(region),
            Some(utility),
            Some(customer_kind),
            Some(unit),
            Some(multiplier),
            Some(register),
            Some(interval_secs),
            Some(valid_from_ms),
        ) if problems.is_empty() => Ok(Installation {
            meter_id,
            customer_id,
            premise_id,
            region,
            utility,
            customer_kind,
            unit,
            multiplier,
            register,
            interval_secs,
            valid_from_ms,
            valid_to_ms,
            plausible_min,
            plausible_max,
            register_rollover,
        }),
        _ => Err(problems.join("; ")),
    }
}

/// UTC ms of an RFC 3339 time or a date (its midnight, UTC).
fn instant_ms(column: &str, text: &str) -> Result<i64, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc().timestamp_millis())
        .ok_or_else(|| format!("{column} `{text}` is neither an RFC 3339 time nor a date (YYYY-MM-DD)"))
}

fn instant_text(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |time| time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn read_csv(path: &Path) -> anyhow::Result<Vec<(usize, Result<Installation, String>)>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let header: HashMap<String, usize> = reader
        .headers()
        .with_context(|| format!("{}: reading the header line", path.display()))?
        .iter()
        .enumerate()
        .map(|(index, name)| (name.trim().to_owned(), index))
        .collect();
    let missing: Vec<&str> =
        COLUMNS.iter().copied().filter(|column| !OPTIONAL_COLUMNS.contains(column) && !header.contains_key(*column)).collect();
    anyhow::ensure!(missing.is_empty(), "{}: line 1: the header lacks the columns {}", path.display(), missing.join(", "));
    let mut rows = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) => {
                let line = record.position().map_or(0, |position| position.line() as usize);
                rows.push((line, installation_of(|column| header.get(column).and_then(|&index| record.get(index)).map(str::to_owned))));
            }
            Err(err) => {
                let line = err.position().map_or(0, |position| position.line() as usize);
                rows.push((line, Err(format!("not a CSV row: {err}"))));
            }
        }
    }
    Ok(rows)
}

fn write_csv(path: &Path, installations: &[&Installation]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    writer.write_record(COLUMNS)?;
    for installation in installations {
        writer.write_record([
            installation.meter_id.to_string(),
            installation.customer_id.to_string(),
            installation.premise_id.clone(),
            installation.region.code().to_owned(),
            installation.utility.as_str().to_owned(),
            installation.customer_kind.as_str().to_owned(),
            installation.unit.as_str().to_owned(),
            installation.multiplier.to_string(),
            installation.register.as_str().to_owned(),
            installation.interval_secs.to_string(),
            instant_text(installation.valid_from_ms),
            installation.valid_to_ms.map(instant_text).unwrap_or_default(),
            installation.plausible_min.map(|min| min.to_string()).unwrap_or_default(),
            installation.plausible_max.map(|max| max.to_string()).unwrap_or_default(),
            installation.register_rollover.map(|rollover| rollover.to_string()).unwrap_or_default(),
        ])?;
    }
    writer.flush().with_context(|| format!("writing {}", path.display()))
}

fn parquet_schema() -> Schema {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let time = |name: &str, nullable| Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), nullable);
    Schema::new(vec![
        Field::new("meter_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        text("premise_id"),
        text("region"),
        text("utility"),
        text("customer_kind"),
        text("unit"),
        Field::new("multiplier", DataType::Float64, false),
        text("register"),
        Field::new("interval_secs", DataType::Int64, false),
        time("valid_from", false),
        time("valid_to", true),
        Field::new("plausible_min", DataType::Float64, true),
        Field::new("plausible_max", DataType::Float64, true),
        Field::new("register_rollover", DataType::Float64, true),
    ])
}

fn write_parquet(path: &Path, installations: &[&Installation]) -> anyhow::Result<()> {
    let strings = |value: fn(&Installation) -> String| -> ArrayRef {
        Arc::new(StringArray::from(installations.iter().map(|installation| value(installation)).collect::<Vec<_>>()))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(installations.iter().map(|installation| installation.meter_id as i64))),
        Arc::new(Int64Array::from_iter_values(installations.iter().map(|installation| installation.customer_id as i64))),
        strings(|installation| installation.premise_id.clone()),
        strings(|installation| installation.region.code().to_owned()),
        strings(|installation| installation.utility.as_str().to_owned()),
        strings(|installation| installation.customer_kind.as_str().to_owned()),
        strings(|installation| installation.unit.as_str().to_owned()),
        Arc::new(Float64Array::from_iter_values(installations.iter().map(|installation| installation.multiplier))),
        strings(|installation| installation.register.as_str().to_owned()),
        Arc::new(Int64Array::from_iter_values(installations.iter().map(|installation| i64::from(installation.interval_secs)))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(installations.iter().map(|installation| installation.valid_from_ms)).with_timezone("UTC"),
        ),
        Arc::new(TimestampMillisecondArray::from(installations.iter().map(|installation| installation.valid_to_ms).collect::<Vec<_>>()).with_timezone("UTC")),
        Arc::new(Float64Array::from(installations.iter().map(|installation| installation.plausible_min).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(installations.iter().map(|installation| installation.plausible_max).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(installations.iter().map(|installation| installation.register_rollover).collect::<Vec<_>>())),
    ];
    let schema = Arc::new(parquet_schema());
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).context("building the registry's Parquet rows")?;
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).context("starting the Parquet file")?;
    writer.write(&batch).context("writing the Parquet rows")?;
    writer.close().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A Parquet column as text per row, whatever its type: numbers, strings and timestamps.
fn column_text(column: &ArrayRef, row: usize) -> Option<String> {
    if column.is_null(row) {
        return None;
    }
    match column.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => Some(instant_text(column.as_primitive::<TimestampMillisecondType>().value(row))),
        DataType::Int64 => Some(column.as_primitive::<Int64Type>().value(row).to_string()),
        _ => {
            let text = arrow::compute::cast(&column.slice(row, 1), &DataType::Utf8).ok()?;
            text.as_string_opt::<i32>().filter(|text| !text.is_null(0)).map(|text| text.value(0).to_owned())
        }
    }
}

fn read_parquet(path: &Path) -> anyhow::Result<Vec<(usize, Result<Installation, String>)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?
        .build()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {}", path.display()))?;
        let missing: Vec<&str> =
            COLUMNS.iter().copied().filter(|column| !OPTIONAL_COLUMNS.contains(column) && batch.column_by_name(column).is_none()).collect();
        anyhow::ensure!(missing.is_empty(), "{}: the file lacks the columns {}", path.display(), missing.join(", "));
        for row in 0..batch.num_rows() {
            let line = rows.len() + 1;
            rows.push((line, installation_of(|column| batch.column_by_name(column).and_then(|values| column_text(values, row)))));
        }
    }
    Ok(rows)
}

/// Sends every change of the registry in the database after revision
/// `published` to the registry topic, then the meters of each newer
/// revision, until `stop`.
#[tracing::instrument(level = "info", skip_all, fields(%topic))]
pub async fn publish(
    db: Database,
    producer: Arc<dyn LogProducer>,
    topic: String,
    mut published: i64,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    loop {
        match publish_changes(&db, producer.as_ref(), &topic, published).await {
            Ok(revision) => published = revision,
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "publishing the meter registry failed; trying again"),
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(PUBLISH_EVERY) => {}
        }
    }
}

/// Sends the meters changed after revision `after`; returns the revision the topic now holds.
pub async fn publish_changes(db: &Database, producer: &dyn LogProducer, topic: &str, after: i64) -> anyhow::Result<i64> {
    let newest = db.registry_revision().await?;
    if newest <= after {
        return Ok(after);
    }
    let changes = db.registry_changes(after).await?;
    auth_ingest::registry_feed::publish(producer, topic, &changes).await.with_context(|| format!("writing to topic {topic}"))?;
    tracing::info!(meters = changes.len(), revision = newest, "meter registry published");
    Ok(newest)
}

/// The registry a gateway attributes readings with, read from the registry
/// topic and followed until `stop`; with `ingest.trustReadings` none is read.
pub fn follow(
    log: &Arc<dyn auth_core::ports::ReadingLog>,
    spec: &auth_core::PipelineSpec,
    pipeline: &str,
    role: &str,
    stop: impl Future<Output = ()> + Send + 'static,
) -> (Arc<LiveRegistry>, Option<tokio::task::JoinHandle<Result<(), auth_core::ports::PortError>>>) {
    let live = LiveRegistry::loading();
    if spec.ingest.trust_readings {
        return (live, None);
    }
    let group = auth_ingest::registry_feed::reader_group(pipeline, role);
    let follower = auth_ingest::registry_feed::follow(Arc::clone(log), auth_core::registry_topic(pipeline), group, Arc::clone(&live), stop);
    (live, Some(tokio::spawn(follower)))
}
