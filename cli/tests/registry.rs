//! `auth registry import|export` as a utility uses it: its installations in
//! CSV or Parquet, every bad line reported and nothing half-imported, and an
//! export that imports back to the same registry.

use std::path::Path;
use std::process::{Command, Output};

const HEADER: &str = "meter_id,customer_id,premise_id,region,utility,customer_kind,unit,multiplier,register,interval_secs,valid_from,valid_to";

fn auth(database: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auth"))
        .args(["registry"])
        .args(args)
        .args(["--database-url", database])
        .env_remove("AUTH_CONFIG")
        .env_remove("AUTH_KAFKA_URL")
        .env("AUTH_LOG", "warn")
        .output()
        .expect("auth runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn write(dir: &Path, name: &str, rows: &[&str]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{HEADER}\n{}\n", rows.join("\n"))).expect("write the file");
    path.display().to_string()
}

#[test]
fn a_registry_file_imports_whole_or_not_at_all_and_exports_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}", dir.path().join("results.db").display());
    // Meter 7 is exchanged for meter 8 on June 1; customer 3 moves out of premise P-9 and customer 4 moves in.
    let good = write(
        dir.path(),
        "meters.csv",
        &[
            "7,1,P-1,US-CA,electricity,residential,kWh,1,interval,900,2026-01-01,2026-06-01",
            "8,1,P-1,US-CA,electricity,residential,Wh,2.5,interval,900,2026-06-01T00:00:00Z,",
            "9,3,P-9,US-NV,water,business,m3,1,interval,3600,2020-01-01,2026-03-15",
            "9,4,P-9,US-NV,water,residential,m3,1,interval,3600,2026-03-15,",
        ],
    );
    let bad = write(
        dir.path(),
        "bad.csv",
        &[
            "10,1,P-1,US-CA,electricity,residential,kWh,1,interval,900,2026-01-01,",
            "11,1,P-1,XX-YY,electricity,residential,kWh,1,interval,900,2026-01-01,",
            "10,2,P-2,US-CA,electricity,residential,kWh,1,interval,900,2026-05-01,",
            "10,1,P-1,US-CA,electricity,residential,kWh,1,interval,900,2026-01-01,",
            "12,1,P-1,US-CA,gas,residential,kWh,1,interval,900,2026-01-01,",
            "13,x,P-1,US-CA,gas,residential,L,1,interval,7,yesterday,",
        ],
    );

    let refused = auth(&database, &["import", &bad]);
    assert!(!refused.status.success(), "{}", text(&refused));
    let report = text(&refused);
    assert!(report.contains("nothing imported"), "{report}");
    assert!(report.contains("line 3: unknown region `XX-YY`"), "{report}");
    assert!(report.contains("line 4: meter 10 is already installed for part of this period (line 2)"), "{report}");
    assert!(report.contains("line 5: meter 10 is already installed"), "the duplicate row: {report}");
    assert!(report.contains("line 6: unit kWh does not measure gas"), "{report}");
    assert!(report.contains("line 7: customer_id `x` is not a whole number") && report.contains("valid_from `yesterday`"), "{report}");
    assert!(!report.contains("line 2:"), "the good row of the bad file is not reported: {report}");

    let imported = auth(&database, &["import", &good]);
    assert!(imported.status.success(), "{}", text(&imported));
    assert!(text(&imported).contains("imported 4 installations of 3 meters"), "{}", text(&imported));
    let empty = auth(&database, &["export", &dir.path().join("none.csv").display().to_string()]);
    assert!(text(&empty).contains("exported 4 installations"), "nothing of the bad file was imported: {}", text(&empty));

    // CSV and Parquet exports import back to the same registry.
    for name in ["export.csv", "export.parquet"] {
        let exported = dir.path().join(name).display().to_string();
        let output = auth(&database, &["export", &exported]);
        assert!(output.status.success(), "{}", text(&output));
        let copy = format!("sqlite://{}", dir.path().join(format!("{name}.db")).display());
        let output = auth(&copy, &["import", &exported]);
        assert!(output.status.success(), "{name}: {}", text(&output));
        let again = dir.path().join(format!("again-{name}.csv")).display().to_string();
        assert!(auth(&copy, &["export", &again]).status.success());
        assert_eq!(
            std::fs::read_to_string(&again).expect("export"),
            std::fs::read_to_string(dir.path().join("none.csv")).expect("export"),
            "{name} round-trips"
        );
    }
    let exported = std::fs::read_to_string(dir.path().join("none.csv")).expect("export");
    assert!(exported.contains("8,1,P-1,US-CA,electricity,residential,Wh,2.5,interval,900,2026-06-01T00:00:00.000Z,"), "{exported}");

    // The plausible bounds are optional columns; a bad bound is refused naming it, a good one round-trips.
    let bounded = |name: &str, rows: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{HEADER},plausible_min,plausible_max\n{}\n", rows.join("\n"))).expect("write the file");
        path.display().to_string()
    };
    let meter_20 = "20,5,P-5,US-CA,electricity,residential,kWh,1,interval,900,2026-01-01,,0.1,5";
    let bad_bounds = bounded("bad-bounds.csv", &[
        meter_20,
        "21,5,P-5,US-CA,gas,residential,m3,1,interval,900,2026-01-01,,,x",
        "22,5,P-5,US-CA,water,residential,L,1,interval,900,2026-01-01,,9,3",
    ]);
    let report = text(&auth(&database, &["import", &bad_bounds]));
    assert!(report.contains("line 3: plausible_max `x` is not a number"), "{report}");
    assert!(report.contains("line 4: plausible min 9 is above plausible max 3"), "{report}");
    let bounds_db = format!("sqlite://{}", dir.path().join("bounds.db").display());
    assert!(auth(&bounds_db, &["import", &bounded("bounds.csv", &[meter_20])]).status.success());
    let parquet = dir.path().join("bounds.parquet").display().to_string();
    assert!(auth(&bounds_db, &["export", &parquet]).status.success());
    let bounds_copy = format!("sqlite://{}", dir.path().join("bounds-copy.db").display());
    assert!(auth(&bounds_copy, &["import", &parquet]).status.success());
    let csv = dir.path().join("bounds-copy.csv").display().to_string();
    assert!(auth(&bounds_copy, &["export", &csv]).status.success());
    let exported = std::fs::read_to_string(&csv).expect("export");
    assert!(exported.contains("20,5,P-5,US-CA,electricity,residential,kWh,1,interval,900,2026-01-01T00:00:00.000Z,,0.1,5"), "{exported}");

    // --replace removes the meters the file does not hold.
    let only_nine = write(dir.path(), "nine.csv", &["9,4,P-9,US-NV,water,residential,m3,1,interval,3600,2026-03-15,"]);
    let output = auth(&database, &["import", "--replace", &only_nine]);
    assert!(text(&output).contains("2 meters not in the file removed"), "{}", text(&output));
}
