//! The user's path: `auth up` serves live usage within seconds, stops cleanly
//! on SIGTERM, and a bad config stops it with the field named.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn auth() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_auth"));
    command.env_remove("AUTH_CONFIG").env_remove("AUTH_LISTEN").env("AUTH_LOG", "warn");
    command
}

/// One HTTP/1.1 request with extra header lines; returns the status code, the head and the body.
fn http(address: &str, method: &str, path: &str, headers: &str, body: &str) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((status, head.to_owned(), body.to_owned()))
}

/// A GET with a session cookie (or none when empty); returns the status code and body.
fn http_get(address: &str, path: &str, cookie: &str) -> std::io::Result<(u16, String)> {
    let headers = if cookie.is_empty() { String::new() } else { format!("Cookie: {cookie}\r\n") };
    http(address, "GET", path, &headers, "").map(|(status, _, body)| (status, body))
}

/// A POST of a JSON body with a bearer key; returns the status code and body.
fn http_post(address: &str, path: &str, key: &str, body: &str) -> std::io::Result<(u16, String)> {
    http(address, "POST", path, &format!("Authorization: Bearer {key}\r\n"), body).map(|(status, _, body)| (status, body))
}

/// Logs in; returns the session cookie (`name=value`).
fn login(address: &str, username: &str, password: &str) -> String {
    let credentials = serde_json::json!({"username": username, "password": password}).to_string();
    let (status, head, body) = http(address, "POST", "/api/v1/login", "", &credentials).expect("login");
    assert_eq!(status, 200, "{username} logs in: {body}");
    let cookie = head.lines().find_map(|line| line.strip_prefix("set-cookie: ")).expect("a session cookie");
    cookie.split(';').next().expect("name=value").to_owned()
}

/// A running `auth up` on ports of its own, with the banner it printed.
struct Up {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    banner: String,
    /// The dashboard's and API's `host:port`.
    address: String,
}

impl Up {
    fn start(config: &Path) -> Self {
        let mut child = auth()
            .args(["up", "--listen", "127.0.0.1:0", "--ingest-listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .spawn()
            .expect("auth up starts");
        let stdout = child.stdout.take().expect("stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut printed = Vec::new();
        while !printed.iter().any(|line: &String| line.contains("customers to look at")) {
            let line = lines.recv_timeout(Duration::from_secs(30)).expect("auth up prints its banner");
            printed.push(line);
        }
        let banner = printed.join("\n");
        let address = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("the banner names the dashboard URL")
            .to_owned();
        Self { child, lines, banner, address }
    }

    /// The gateway's `host:port` and the demo key the banner prints.
    fn gateway(&self) -> (String, String) {
        let line = self.banner.lines().find(|line| line.contains("POST http://")).expect("the banner names the gateway");
        let address = line.split("http://").nth(1).and_then(|rest| rest.split('/').next()).expect("gateway address");
        let key = line.split("Bearer ").nth(1).and_then(|rest| rest.split('`').next()).expect("demo key");
        (address.to_owned(), key.to_owned())
    }

    /// Stops it with SIGTERM, checks it exits cleanly and returns what it printed after the banner.
    fn stop(mut self) -> Vec<String> {
        let killed = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(killed.success());
        let status = self.child.wait().expect("auth up exits");
        assert!(status.success(), "auth up exits cleanly: {status}");
        self.lines.try_iter().collect()
    }
}

impl Drop for Up {
    /// A failed test does not leave `auth up` running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The PromQL queries of the chart's Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/auth/files/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect()
}

/// Registers water meter 77 of customer 987654321 (US-NV) with `auth registry
/// import`, as a utility registers its meters, in the results database of the
/// running `auth up`.
fn register_meter_77(config: &Path, dir: &Path) {
    let file = dir.join("meters.csv");
    std::fs::write(
        &file,
        "meter_id,customer_id,premise_id,region,utility,customer_kind,unit,multiplier,register,interval_secs,valid_from,valid_to\n\
         77,987654321,NV-0077,US-NV,water,residential,L,1,interval,900,2020-01-01,\n",
    )
    .expect("write the registry file");
    let output = auth().args(["registry", "import"]).arg(&file).arg("--config").arg(config).output().expect("auth runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("imported 1 installations of 1 meters"), "{printed}");
}

/// Posts `reading` until the gateway takes it: `auth up` publishes registry
/// changes every 2 s, and until then the meter is unknown (400).
fn post_until_accepted(gateway: &str, key: &str, reading: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = http_post(gateway, "/api/v1/readings", key, reading).expect("gateway");
        if status == 202 {
            return answer;
        }
        assert!(status == 400 && answer.contains("not in the registry"), "{status}: {answer}");
        assert!(Instant::now() < deadline, "the registered meter was not taken within 30 s: {answer}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How many series a PromQL query returns now; a query Prometheus refuses fails the test.
fn series(prometheus: &str, query: &str) -> usize {
    let url = url::Url::parse_with_params(&format!("http://{prometheus}/api/v1/query"), [("query", query)]).expect("query URL");
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let (status, body) = http_get(prometheus, &path, "").expect("Prometheus answers");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
    assert!(status == 200 && answer["status"] == "success", "Prometheus refused {query}: {body}");
    answer["data"]["result"].as_array().map_or(0, Vec::len)
}

#[test]
fn up_serves_live_usage_and_stops_cleanly() {
    let config = tempfile::NamedTempFile::new().expect("temp file");
    let data = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        config.path(),
        format!(
            "simulator:\n  customers: 300\nstream:\n  flushIntervalMs: 500\n  checkpointIntervalMs: 1000\n\
             archive:\n  url: {0}/master\n  rollSecs: 1\nbatch:\n  databaseUrl: sqlite://{0}/results.db\n  scheduleSecs: 1\n",
            data.path().display()
        ),
    )
    .expect("write config");
    let started_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let up = Up::start(config.path());
    let (banner, address) = (up.banner.clone(), up.address.clone());
    let customer = banner
        .split("customers to look at: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("the banner lists customers")
        .to_owned();

    let (status, page) = http_get(&address, "/", "").expect("dashboard");
    assert_eq!(status, 200);
    assert!(page.contains("AUTH"));

    // The banner prints the demo accounts: `login      <username> / <password>   (...)`.
    let logins: Vec<(String, String)> = banner
        .lines()
        .filter_map(|line| line.trim().strip_prefix("login"))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            let username = words.next()?.to_owned();
            let password = words.nth(1)?.to_owned();
            Some((username, password))
        })
        .collect();
    let (operator, password) = logins.iter().find(|(username, _)| username == "operator").expect("a demo operator");
    let operator = login(&address, operator, password);
    let (demo_customer, password) = logins.iter().find(|(username, _)| *username == format!("customer-{customer}")).expect("a demo customer");
    let own = login(&address, demo_customer, password);
    assert_eq!(http_get(&address, &format!("/api/v1/customers/{customer}/today"), "").expect("usage").0, 401);
    assert_eq!(http_get(&address, "/api/v1/customers/987654321/today", &own).expect("usage").0, 403);

    let deadline = Instant::now() + Duration::from_secs(30);
    // Restated past days may come first; today's live readings follow.
    loop {
        let (status, body) = http_get(&address, &format!("/api/v1/customers/{customer}/today"), &own).expect("usage");
        if status == 200 {
            let usage: serde_json::Value = serde_json::from_str(&body).expect("usage is JSON");
            let utilities = usage["utilities"].as_array().expect("utilities");
            if utilities.iter().any(|u| u["todayReadings"].as_u64() > Some(0)) {
                break;
            }
        } else {
            assert_eq!(status, 404, "only 'not yet' is acceptable while the first readings flow: {body}");
        }
        assert!(Instant::now() < deadline, "no usage today for customer {customer} within 30 s: {body}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // Today so far went through the pipeline on this first start: the
    // customer has every hour since UTC midnight, not only those since `auth
    // up` started (the local days that began before it are whole).
    const HOUR_MS: i64 = 3_600_000;
    let midnight = started_ms - started_ms.rem_euclid(24 * HOUR_MS);
    let expected: Vec<i64> = (midnight..=started_ms).step_by(HOUR_MS as usize).collect();
    let uri = format!("/api/v1/customers/{customer}/usage?granularity=hour&from={midnight}&to={}", started_ms + HOUR_MS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(&address, &uri, &own).expect("usage");
        assert_eq!(status, 200, "{body}");
        let usage: serde_json::Value = serde_json::from_str(&body).expect("usage is JSON");
        let utilities = usage["utilities"].as_array().cloned().unwrap_or_default();
        let points = utilities.iter().flat_map(|series| series["points"].as_array().cloned().unwrap_or_default());
        let hours: std::collections::BTreeSet<i64> = points.filter_map(|point| point["startMs"].as_i64()).filter(|&start| start <= started_ms).collect();
        if hours.iter().copied().eq(expected.iter().copied()) {
            break;
        }
        assert!(Instant::now() < deadline, "the hours since UTC midnight within 60 s: {hours:?} against {expected:?}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // A meter of our own, through the gateway with the printed key.
    let (gateway, key) = up.gateway();
    let (gateway, key) = (gateway.as_str(), key.as_str());
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    let reading = format!(
        r#"{{"meterId": 77, "customerId": 987654321, "utility": "water", "region": "US-NV",
            "customerKind": "residential", "tsMs": {now_ms}, "value": 42.5}}"#
    );
    let (status, answer) = http_post(gateway, "/api/v1/readings", "wrong", &reading).expect("gateway");
    assert_eq!(status, 401, "{answer}");
    // Nobody is believed on their word: the meter must be in the registry first.
    let (status, answer) = http_post(gateway, "/api/v1/readings", key, &reading).expect("gateway");
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("meter 77 is not in the registry"), "{answer}");
    register_meter_77(config.path(), data.path());
    // What a meter knows is enough now: the registry says whose it is.
    let slim = format!(r#"{{"meterId": 77, "tsMs": {now_ms}, "value": 42.5}}"#);
    let answer = post_until_accepted(gateway, key, &slim);
    assert!(answer.contains(r#""accepted":1"#), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(&address, "/api/v1/customers/987654321/usage?granularity=minute", &operator).expect("usage");
        if status == 200 {
            assert!(body.contains("42.5"), "the posted value is served: {body}");
            break;
        }
        assert!(Instant::now() < deadline, "the posted reading was not served within 30 s");
        std::thread::sleep(Duration::from_millis(250));
    }

    // The batch has recomputed the backfilled history: the customer's past
    // days are served from its results.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(&address, &format!("/api/v1/customers/{customer}/usage?granularity=day"), &own).expect("usage");
        assert_eq!(status, 200, "{body}");
        let usage: serde_json::Value = serde_json::from_str(&body).expect("usage is JSON");
        let points = usage["utilities"][0]["points"].as_array().cloned().unwrap_or_default();
        let from_batch = points.iter().filter(|point| point["source"] == "batch" && point["sum"].as_f64() > Some(0.0)).count();
        if from_batch >= 3 {
            assert_eq!(points.last().map(|point| point["source"].clone()), Some("stream".into()), "today is the stream's: {usage}");
            break;
        }
        assert!(Instant::now() < deadline, "no batch-restated past days within 60 s: {usage}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The archiver keeps the live readings as master data too.
    let today = data.path().join("master/readings/utility=electricity");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&today).map_or(0, Iterator::count) < 4 {
        assert!(Instant::now() < deadline, "no archived day beside the 3 backfilled ones in {today:?}");
        std::thread::sleep(Duration::from_millis(250));
    }

    let (status, regions) = http_get(&address, "/api/v1/regions", &own).expect("regions");
    assert_eq!(status, 200);
    assert!(regions.contains("US-CA"));
    let (status, pipeline) = http_get(&address, "/api/v1/pipeline", &operator).expect("pipeline");
    assert_eq!(status, 200, "{pipeline}");
    let pipeline: serde_json::Value = serde_json::from_str(&pipeline).expect("pipeline is JSON");
    assert!(pipeline["logReadings"].as_u64() > Some(0), "{pipeline}");
    let (status, metrics) = http_get(&address, "/metrics", "").expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("auth_stream_readings_total"), "{metrics}");

    let rest = up.stop();
    assert!(rest.iter().any(|line| line.contains("stopped cleanly")), "{rest:?}");
}

/// A user tries AUTH on their own meters: no simulator, their registry, their readings.
#[test]
fn up_without_the_simulator_serves_a_users_own_registry_and_readings() {
    let config = tempfile::NamedTempFile::new().expect("temp file");
    let data = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        config.path(),
        format!(
            "simulator:\n  enabled: false\nstream:\n  flushIntervalMs: 500\n  checkpointIntervalMs: 1000\n\
             archive:\n  url: {0}/master\nbatch:\n  databaseUrl: sqlite://{0}/results.db\n",
            data.path().display()
        ),
    )
    .expect("write config");
    let up = Up::start(config.path());
    assert!(up.banner.contains("without the simulator"), "{}", up.banner);
    assert!(up.banner.contains("auth registry import"), "the banner says what to do first: {}", up.banner);
    let logins: Vec<&str> = up.banner.lines().filter(|line| line.trim().starts_with("login")).collect();
    assert_eq!(logins.len(), 1, "only the operator: no simulated customer to log in as: {logins:?}");
    let password = logins[0].split_whitespace().nth(3).expect("the operator's password");
    let operator = login(&up.address, "operator", password);

    register_meter_77(config.path(), data.path());
    let (gateway, key) = up.gateway();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    post_until_accepted(&gateway, &key, &format!(r#"{{"meterId": 77, "tsMs": {now_ms}, "value": 42.5}}"#));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(&up.address, "/api/v1/customers/987654321/usage?granularity=minute", &operator).expect("usage");
        if status == 200 {
            assert!(body.contains("42.5"), "the posted value is served: {body}");
            break;
        }
        assert!(Instant::now() < deadline, "the posted reading was not served within 30 s");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, meters) = http_get(&up.address, "/api/v1/customers/987654321/meters", &operator).expect("meters");
    assert_eq!(status, 200);
    assert!(meters.contains("NV-0077"), "{meters}");
    let rest = up.stop();
    assert!(rest.iter().any(|line| line.contains("stopped cleanly")), "{rest:?}");
}

/// Monitoring for real: Debian's Prometheus scrapes a running `auth up`, and
/// every query of the chart's Grafana dashboard returns a series.
#[test]
#[ignore = "needs Debian's prometheus (scripts/services.sh build-deps): scripts/test.sh runs it"]
fn prometheus_scrapes_up_and_every_dashboard_query_returns_a_series() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    let config = tempfile::NamedTempFile::new().expect("temp file");
    let data = tempfile::tempdir().expect("temp dir");
    // Event time runs 30 times faster than the clock, so windows close and
    // late readings arrive within seconds; some readings are malformed.
    std::fs::write(
        config.path(),
        format!(
            "simulator:\n  customers: 300\n  mode: accelerated\n  timeFactor: 30\n  lateShare: 0.05\n  malformedShare: 0.01\n\
             stream:\n  flushIntervalMs: 500\n  checkpointIntervalMs: 1000\n\
             archive:\n  url: {0}/master\n  rollSecs: 1\nbatch:\n  databaseUrl: sqlite://{0}/results.db\n  scheduleSecs: 1\n",
            data.path().display()
        ),
    )
    .expect("write config");
    let up = Up::start(config.path());
    let (gateway, key) = up.gateway();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    let reading = format!(
        r#"{{"meterId": 77, "customerId": 987654321, "utility": "water", "region": "US-NV",
            "customerKind": "residential", "tsMs": {now_ms}, "value": 42.5}}"#
    );
    register_meter_77(config.path(), data.path());
    post_until_accepted(&gateway, &key, &reading);

    let prometheus_dir = tempfile::tempdir().expect("temp dir");
    let prometheus_address = free_address();
    let scrape = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: auth\n    \
         static_configs:\n      - targets: ['{}']\n",
        up.address
    );
    std::fs::write(prometheus_dir.path().join("prometheus.yml"), scrape).expect("write prometheus.yml");
    let program = std::env::var("AUTH_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
    let log = std::fs::File::create(prometheus_dir.path().join("prometheus.log")).expect("log file");
    let prometheus = Command::new(&program)
        .arg(format!("--config.file={}", prometheus_dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", prometheus_dir.path().join("data").display()))
        .arg(format!("--web.listen-address={prometheus_address}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("{program} is missing ({err}): scripts/services.sh build-deps installs Debian's prometheus"));
    let _prometheus = KillOnDrop(prometheus);
    let log = || std::fs::read_to_string(prometheus_dir.path().join("prometheus.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&prometheus_address, "/-/ready", "").ok().map(|(status, _)| status) != Some(200) {
        assert!(Instant::now() < deadline, "Prometheus was not ready within 30 s:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // rate() needs two scrapes of a series; the API's latency needs requests.
    let mut missing = queries;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        http_get(&up.address, "/api/v1/regions", "").expect("API");
        missing.retain(|query| series(&prometheus_address, query) == 0);
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no series within 120 s for:\n  {}\nPrometheus log:\n{}", missing.join("\n  "), log());
        std::thread::sleep(Duration::from_millis(500));
    }
    up.stop();
}

fn free_address() -> String {
    let address = std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port");
    address.to_string()
}

/// On Kubernetes the batch is a CronJob that nothing scrapes: `auth batch`
/// records its run in the results database, and `auth api` exports it on its
/// metrics port (the one the pods' annotations and the PodMonitor name).
#[test]
#[ignore = "needs Kafka and Redis: scripts/test.sh runs it"]
fn the_api_exports_the_batch_run_on_its_metrics_port() {
    let data = tempfile::tempdir().expect("temp dir");
    let master = data.path().join("master");
    let config = data.path().join("spec.yaml");
    std::fs::write(&config, "simulator:\n  customers: 20\n  heartbeatSecs: 3600\n").expect("write config");
    let backfill = auth()
        .args(["simulate", "--backfill", "--from", "2026-11-27", "--to", "2026-11-27", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&master)
        .output()
        .expect("auth simulate runs");
    assert!(backfill.status.success(), "{}", String::from_utf8_lossy(&backfill.stderr));
    let database = format!("sqlite://{}/results.db", data.path().display());
    let batch = auth()
        .args(["batch", "--date", "2026-11-27", "--database-url", &database, "--master-url"])
        .arg(&master)
        .env_remove("AUTH_REDIS_URL")
        .output()
        .expect("auth batch runs");
    assert!(batch.status.success(), "{}", String::from_utf8_lossy(&batch.stderr));

    let (api, metrics) = (free_address(), free_address());
    let child = auth()
        .args(["api", "--kafka-url", &auth_testkit::kafka_url(), "--redis-url", &auth_testkit::redis_url()])
        .args(["--database-url", &database, "--listen", &api, "--metrics-listen", &metrics])
        .spawn()
        .expect("auth api starts");
    let _api = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&metrics, "/healthz", "").ok().map(|(status, _)| status) != Some(200) {
        assert!(Instant::now() < deadline, "auth api served no /healthz on {metrics} within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    for address in [&metrics, &api] {
        let (status, body) = http_get(address, "/metrics", "").expect("metrics");
        assert_eq!(status, 200);
        for name in ["auth_batch_last_success_timestamp_seconds ", "auth_batch_duration_seconds "] {
            assert!(body.lines().any(|line| line.starts_with(name)), "{name}on {address}:\n{body}");
        }
    }
    assert_eq!(http_get(&metrics, "/api/v1/regions", "").expect("metrics port").0, 404, "only the probes on the metrics port");
}

#[test]
fn users_add_creates_accounts_and_refuses_bad_ones() {
    let data = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}/results.db", data.path().display());
    let add = |args: &[&str], password: &str| {
        let mut child = auth()
            .args(["users", "add", "--database-url", &database])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("auth users add");
        child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("password");
        child.wait_with_output().expect("exit")
    };
    let output = add(&["ada", "--role", "customer", "--customer-id", "17"], "a long password");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "account ada added: customer 17");
    let output = add(&["ada", "--role", "customer", "--customer-id", "17"], "a long password");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("account \"ada\" exists already"), "{output:?}");
    let output = add(&["bo", "--role", "customer"], "a long password");
    assert!(String::from_utf8_lossy(&output.stderr).contains("a customer account needs its customer id"), "{output:?}");
    let output = add(&["root", "--role", "operator"], "short");
    assert!(String::from_utf8_lossy(&output.stderr).contains("password: at least 8 characters"), "{output:?}");
    let listed = auth().args(["users", "list", "--database-url", &database]).output().expect("auth users list");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "ada\tcustomer 17\n");
}

#[test]
fn a_bad_config_stops_with_every_field_named() {
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(config.path(), "windows:\n  sizesSecs: [60, 7]\nlog:\n  partitions: 0\n").expect("write config");
    for args in [vec!["spec"], vec!["up", "--listen", "127.0.0.1:0", "--config"]] {
        let output = auth().args(&args).arg(config.path()).output().expect("auth runs");
        assert!(!output.status.success(), "{args:?} refuses the config");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("windows.sizesSecs[1]") && stderr.contains("log.partitions"), "{args:?}: {stderr}");
    }
    std::fs::write(config.path(), "simulator:\n  custommers: 5\n").expect("write config");
    let output = auth().arg("spec").arg(config.path()).output().expect("auth runs");
    assert!(String::from_utf8_lossy(&output.stderr).contains("simulator.custommers"));
}

#[test]
fn roles_on_real_servers_say_which_url_is_missing_or_wrong() {
    let output = auth().args(["stream", "--metrics-listen", "127.0.0.1:0"]).env_remove("AUTH_KAFKA_URL").output().expect("auth runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("log.url"), "{output:?}");
    let output = auth()
        .args(["stream", "--kafka-url", "kafka://127.0.0.1:9092", "--metrics-listen", "127.0.0.1:0"])
        .env_remove("AUTH_REDIS_URL")
        .output()
        .expect("auth runs");
    assert!(String::from_utf8_lossy(&output.stderr).contains("serving.url"), "{output:?}");
    let output = auth().args(["simulate", "--to", "kafka://nowhere", "--count", "1"]).output().expect("auth runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("log.url"), "{output:?}");
}

#[test]
fn spec_prints_defaults_that_load_back() {
    let output = auth().arg("spec").output().expect("auth runs");
    assert!(output.status.success());
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(config.path(), &output.stdout).expect("write");
    let check = auth().arg("spec").arg(config.path()).output().expect("auth runs");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}
