//! `auth bench batch`: the batch job's three aggregations over one simulated
//! local day of master data (each region's day of the date, from the two UTC
//! date folders that hold the US regions' days), against DuckDB and Polars on
//! the same files, then the whole daily job (aggregations, SQL writes,
//! restatement).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use auth_batch::settle::Archived;
use auth_batch::{BatchJob, DayInputs, DayOutputs, Expectations, ResultsDb, Serving, run_day};
use auth_core::ports::ServingStore;
use auth_core::local_day::LocalDays;
use auth_core::{PipelineSpec, Utility};
use auth_embedded::MemoryStore;
use auth_master::{MasterStore, parse_date};
use serde_json::{Value, json};

/// The simulated day; the backfill writes it and the day after (UTC), which
/// together hold every US region's local day of it.
const DATE: &str = "2026-01-15";
const NEXT_DATE: &str = "2026-01-16";
/// One reading per meter every 15 minutes: 96 a day.
const HEARTBEAT_SECS: u32 = 900;

pub struct BatchBench {
    pub readings: u64,
    pub data: Option<PathBuf>,
    pub memory_limit_bytes: u64,
    pub partitions: u32,
    pub skip_reference: bool,
    /// Share of customers with one more meter, silent all day.
    pub silent_meter_share: f64,
}

/// The simulated fleet's registry, plus a silent electricity meter for
/// `share` of its customers (the first ones, ids above the fleet's).
fn bench_registry(spec: &PipelineSpec, share: f64) -> auth_core::registry::Registry {
    let fleet = auth_ingest::Fleet::generate(&spec.simulator);
    let installations = fleet.installations(spec.simulator.heartbeat_secs);
    let mut registry = auth_core::registry::Registry::default();
    let first_silent_id = installations.iter().map(|installation| installation.meter_id).max().unwrap_or(0) + 1;
    let silent_customers = (spec.simulator.customers as f64 * share.clamp(0.0, 1.0)).round() as usize;
    let mut electricity = installations.iter().filter(|installation| installation.utility == Utility::Electricity);
    for (meter_id, installation) in (first_silent_id..).zip(electricity.by_ref().take(silent_customers)) {
        registry.set_meter(meter_id, vec![auth_core::registry::Installation { meter_id, ..installation.clone() }]);
    }
    for installation in installations {
        registry.set_meter(installation.meter_id, vec![installation]);
    }
    registry
}

fn bench_spec(bench: &BatchBench) -> PipelineSpec {
    let mut spec = PipelineSpec::default();
    let meters_per_customer = 2.0 + spec.simulator.gas_share;
    let readings_per_meter = f64::from(86_400 / HEARTBEAT_SECS);
    spec.simulator.customers = (bench.readings as f64 / meters_per_customer / readings_per_meter).round().max(1.0) as u64;
    spec.simulator.heartbeat_secs = HEARTBEAT_SECS;
    spec.log.partitions = bench.partitions;
    spec
}

/// Peak resident memory of this process so far (`VmHWM`).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Writes the day with `auth simulate --backfill` in a child process (so its
/// memory is not this process's), unless the folder already holds it.
fn ensure_data(folder: &Path, spec: &PipelineSpec) -> anyhow::Result<()> {
    let done = folder.join(".complete");
    if done.exists() {
        println!("reusing the master data in {}", folder.display());
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(folder);
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    let config = folder.join("spec.yaml");
    std::fs::write(&config, serde_saphyr::to_string(spec).context("rendering the spec")?).context("writing the spec")?;
    println!("backfilling {DATE} and {NEXT_DATE} for {} customers into {}", spec.simulator.customers, folder.display());
    let status = Command::new(auth_binary()?)
        .args(["simulate", "--backfill", "--from", DATE, "--to", NEXT_DATE, "--out"])
        .arg(folder)
        .arg("--config")
        .arg(&config)
        .status()
        .context("running auth simulate --backfill")?;
    anyhow::ensure!(status.success(), "auth simulate --backfill failed");
    std::fs::write(&done, "").context("marking the data complete")?;
    Ok(())
}

/// The `auth` binary that backfills the data: `AUTH_BIN`, or the one built
/// beside this benchmark (`cargo build --release -p auth`).
fn auth_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("AUTH_BIN") {
        return Ok(PathBuf::from(path));
    }
    let beside = std::env::current_exe().context("finding this binary")?.with_file_name("auth");
    anyhow::ensure!(
        beside.exists(),
        "bench batch backfills its data with the auth binary, and {} does not exist: build it with `cargo build --release -p auth`, or set AUTH_BIN",
        beside.display()
    );
    Ok(beside)
}

/// The figures DuckDB's and Polars' script prints for comparison, computed from our outputs.
fn fingerprint(outputs: &DayOutputs) -> Value {
    let daily = &outputs.customers;
    let mut region_hours: Vec<Value> = outputs
        .region_hours
        .iter()
        .map(|row| json!([row.utility.as_str(), row.region.code(), row.hour, row.total, row.readings, row.customers]))
        .collect();
    region_hours.sort_by_key(|row| row.to_string());
    let mut top: Vec<Value> = outputs
        .top_customers
        .iter()
        .map(|row| json!([row.utility.as_str(), row.region.code(), row.position, row.customer_id, row.total]))
        .collect();
    top.sort_by_key(|row| row.to_string());
    json!({
        "customer_days": daily.len(),
        "customer_total": daily.iter().map(|row| row.total).sum::<f64>(),
        "customer_readings": daily.iter().map(|row| row.readings).sum::<u64>(),
        "peak_hours": daily.iter().map(|row| u64::from(row.peak_hour)).sum::<u64>(),
        "region_hours": region_hours,
        "top": top,
    })
}

/// Compares two fingerprints, with the lists sorted the same way.
fn same_results(ours: &Value, theirs: &Value) -> bool {
    let sorted = |value: &Value, key: &str| {
        let mut rows: Vec<String> = value[key].as_array().map(|rows| rows.iter().map(Value::to_string).collect()).unwrap_or_default();
        rows.sort();
        rows
    };
    ["customer_days", "customer_total", "customer_readings", "peak_hours"].iter().all(|key| ours[key].as_f64() == theirs[key].as_f64())
        && sorted(ours, "region_hours") == sorted(theirs, "region_hours")
        && sorted(ours, "top") == sorted(theirs, "top")
}

/// DuckDB and Polars (pip, in a venv of their own) on the same files, each in a process of its own.
fn reference(folder: &Path, engine: &str) -> anyhow::Result<Value> {
    let venv = venv()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/batch_reference.py");
    let date = parse_date(DATE).context("the bench date")?;
    let days = LocalDays::of(date);
    let ranges: serde_json::Map<String, Value> = auth_core::Region::all()
        .map(|region| {
            let range = days.range(region);
            (region.code().to_owned(), json!([range.start, range.end]))
        })
        .collect();
    let output = Command::new(venv.join("bin/python"))
        .arg(&script)
        .arg(folder)
        .arg([DATE, NEXT_DATE].join(","))
        .arg(engine)
        .arg(Value::Object(ranges).to_string())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(output.status.success(), "{engine} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).with_context(|| format!("reading {engine}'s figures"))
}

/// The venv with DuckDB and Polars, installed from PyPI when missing.
fn venv() -> anyhow::Result<PathBuf> {
    let home = std::env::var("HOME").context("HOME is not set")?;
    let venv = PathBuf::from(home).join(".cache/auth/bench-venv");
    if !venv.join("bin/python").exists() || !venv.join(".complete").exists() {
        println!("installing DuckDB and Polars from PyPI into {}", venv.display());
        let created = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context("python3 -m venv")?;
        anyhow::ensure!(created.success(), "python3 -m venv failed");
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "duckdb==2.0.0", "polars==2.1.0"])
            .status()
            .context("pip install")?;
        anyhow::ensure!(installed.success(), "pip install duckdb polars failed");
        std::fs::write(venv.join(".complete"), "").context("marking the venv complete")?;
    }
    Ok(venv)
}

pub fn run(bench: &BatchBench) -> anyhow::Result<Value> {
    let spec = bench_spec(bench);
    let folder = match &bench.data {
        Some(folder) => folder.clone(),
        None => {
            let home = std::env::var("HOME").context("HOME is not set")?;
            PathBuf::from(home).join(format!(".cache/auth/bench-batch/{}-{}-two-days", bench.readings, bench.partitions))
        }
    };
    ensure_data(&folder, &spec)?;
    let date = parse_date(DATE).context("the bench date")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let master = MasterStore::open(folder.to_str().context("a UTF-8 data path")?)?;
    let job = BatchJob::new(master, bench.memory_limit_bytes);
    // The simulated fleet's registry, so that the day's completeness is computed as in production.
    let registry = bench_registry(&spec, bench.silent_meter_share);
    let expectations = Arc::new(Expectations::of_registry(&registry, date, &Utility::ALL, i64::MAX));
    let expected_meters = expectations.len();

    let started = Instant::now();
    let inputs = DayInputs { expectations, ..DayInputs::new(date) };
    let outputs = runtime.block_on(job.compute(date, &Utility::ALL, inputs))?;
    let auth_seconds = started.elapsed().as_secs_f64();
    let peak_rss = peak_rss_bytes();
    let readings: u64 = outputs.totals.iter().map(|(_, total)| total.readings).sum();
    let estimated: u64 = outputs.customers.iter().map(|day| day.estimated_intervals).sum();
    println!(
        "auth: {readings} readings -> {} customer days, {} region hours, {} top customers, {expected_meters} meters' completeness \
         ({} with gaps, {estimated} intervals estimated), {} readings flagged suspect in {auth_seconds:.2} s, peak RSS {} MiB",
        outputs.customers.len(),
        outputs.region_hours.len(),
        outputs.top_customers.len(),
        outputs.meter_gaps.len(),
        outputs.suspect_intervals.len(),
        peak_rss >> 20
    );
    let ours = fingerprint(&outputs);

    let mut figures = json!({
        "readings": readings,
        "customers": spec.simulator.customers,
        "partitions": bench.partitions,
        "memory_limit_bytes": bench.memory_limit_bytes,
        "auth_seconds": auth_seconds,
        "readings_per_sec": (readings as f64 / auth_seconds).round(),
        "peak_rss_bytes": peak_rss,
        "expected_meters": expected_meters,
        "meters_with_gaps": outputs.meter_gaps.len(),
        "suspect_readings": outputs.suspect_intervals.len(),
        "estimated_intervals": estimated,
        "silent_meter_share": bench.silent_meter_share,
    });
    if !bench.skip_reference {
        for engine in ["duckdb", "polars"] {
            let result = reference(&folder, engine)?;
            let seconds = result[engine]["seconds"].as_f64().context("the reference's seconds")?;
            let equal = same_results(&ours, &result[engine]["result"]);
            println!(
                "{engine} {}: {seconds:.2} s, peak RSS {} MiB, results {}",
                result[engine]["version"],
                result["peak_rss_bytes"].as_u64().unwrap_or(0) >> 20,
                if equal { "equal" } else { "DIFFERENT" }
            );
            anyhow::ensure!(equal, "{engine}'s results differ from the batch's:\nours {ours}\n{engine} {}", result[engine]["result"]);
            figures[format!("{engine}_seconds")] = json!(seconds);
            figures[format!("{engine}_peak_rss_bytes")] = result["peak_rss_bytes"].clone();
            figures[format!("time_vs_{engine}")] = json!(auth_seconds / seconds);
        }
    }

    // The whole daily job: the registry read from the results database, the
    // aggregations again, the SQL writes (SQLite) and the restatement of an
    // in-memory serving store.
    let results_dir = tempfile::tempdir().context("a temporary directory")?;
    let url = format!("sqlite://{}/results.db", results_dir.path().display());
    let store: Arc<dyn ServingStore> = Arc::new(MemoryStore::new(spec.serving.recent_windows));
    let database = runtime.block_on(async {
        let database = auth_results::Database::connect(&url).await?;
        database.import_registry(&registry, true, 0).await?;
        anyhow::Ok(database)
    })?;
    let started = Instant::now();
    let summary = runtime.block_on(async {
        let results = ResultsDb::of(database);
        let now_ms = auth_master::day_start_ms(date) + 2 * 86_400_000;
        // The benchmark's master data was written whole before the run.
        let serving = Serving { store: store.as_ref(), settle_ms: 0, archived: Archived::Before(now_ms) };
        anyhow::Ok(run_day(&job, &results, Some(&serving), date, &Utility::ALL, now_ms).await?)
    })?;
    let daily_seconds = started.elapsed().as_secs_f64();
    println!("{}", summary.line());
    figures["daily_job_seconds"] = json!(daily_seconds);
    figures["daily_job_compute_ms"] = json!(summary.compute_ms);
    figures["daily_job_sql_write_ms"] = json!(summary.write_ms);
    figures["daily_job_restate_ms"] = json!(summary.restate_ms);
    Ok(figures)
}
