//! `auth simulate` prints readings in the edge's JSON form, deterministically.

use std::process::Command;

fn simulate(seed_config: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_auth"))
        .args(["simulate", "--count", "50", "--start-ms", "1795824000000", "--config"])
        .arg(seed_config)
        .env("AUTH_LOG", "warn")
        .output()
        .expect("auth simulate runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[test]
fn prints_valid_readings_and_repeats_itself() {
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(config.path(), "simulator:\n  customers: 20\n  seed: 9\n").expect("write config");
    let first = simulate(config.path());
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 50);
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let reading = auth_core::Reading::from_json(&value, auth_core::ReceiverClock::new(1_795_824_000_000, 3_600_000)).expect("a valid reading");
        assert!((1..=20).contains(&reading.customer_id), "{line}");
    }
    assert_eq!(simulate(config.path()), first, "same seed, same readings");
}
