//! The gateway as users run it: `auth keys create`, `auth ingest` on Kafka and
//! Mosquitto, and the fleet sent through it by `auth simulate --to http://`
//! and `--to mqtt://` after registering its meters (`--register`); the
//! topics hold every reading sent.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auth_core::{Utility, utility_topic};
use auth_testkit::{Backend, kafka_url, require_server};

fn mqtt_url() -> String {
    std::env::var("AUTH_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

fn auth(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_auth"));
    command
        .current_dir(dir)
        .env("AUTH_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("AUTH_KAFKA_URL")
        .env_remove("AUTH_INGEST_KEY")
        .env_remove("AUTH_INGEST_KEYS")
        .stdin(Stdio::null());
    command
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_line(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(needle)) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no `{needle}` in {}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Mosquitto: scripts/test.sh runs it"]
async fn readings_sent_through_the_gateway_binaries_reach_the_topics() {
    require_server("Mosquitto", mqtt_url().trim_start_matches("mqtt://"));
    let backend = Backend::real("gateway-cli");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spec.yaml"),
        format!(
            "log: {{partitions: 3, url: '{}'}}\nbatch: {{databaseUrl: 'sqlite://results.db'}}\n\
             simulator: {{customers: 500, seed: 5, mode: asFastAsPossible, startMs: 1795824000000}}\n",
            kafka_url()
        ),
    )
    .unwrap();

    let created = auth(dir.path()).args(["keys", "create", "--name", "test meters"]).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("auth_"), "{key}");
    assert!(!std::fs::read_to_string(dir.path().join("auth-keys.json")).unwrap().contains(&key));

    let log_path = dir.path().join("ingest.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let gateway = Killed(
        auth(dir.path())
            .args(["ingest", "--config", "spec.yaml", "--pipeline", &backend.pipeline, "--kafka-url", &kafka_url()])
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--mqtt", &mqtt_url()])
            .args(["--mqtt-client-id", &format!("{}-gateway", backend.pipeline)])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let serving = wait_for_line(&log_path, "ingest gateway serving");
    let address = serving.split("address=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    wait_for_line(&log_path, "subscribed");

    let sent = |to: String, key: Option<&str>, count: &str, start_ms: &str| {
        let mut command = auth(dir.path());
        command.args(["simulate", "--config", "spec.yaml", "--to", &to, "--count", count, "--start-ms", start_ms]);
        // The fleet registers its meters (results database and registry topic) before it sends.
        command.args(["--register", "--pipeline", &backend.pipeline]);
        command.args(["--metrics-listen", "127.0.0.1:0"]);
        if let Some(key) = key {
            command.args(["--key", key]);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    sent(format!("http://{address}"), Some(&key), "4000", "1795824000000");
    sent(mqtt_url(), None, "1000", "1795827600000");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut stored = 0;
        for utility in Utility::ALL {
            stored += backend.log.end_offsets(&utility_topic(&backend.pipeline, utility)).await.unwrap().iter().sum::<u64>();
        }
        if stored == 5_000 {
            break;
        }
        assert!(stored < 5_000, "{stored} records for 5000 readings");
        assert!(Instant::now() < deadline, "{stored} of 5000 readings on the topics\n{}", std::fs::read_to_string(&log_path).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(gateway);
}
