//! A `UtilityPipeline` on a node whose containers really run (`auth-node` of
//! `scripts/services.sh start kube`): the image `scripts/image.sh` builds from
//! this build's `auth`, imported into the node's containerd; the operator
//! reconciling the pipeline; its managed Redis as a pod on a persistent
//! volume; readings posted to the gateway's Service (and refused without a
//! key) and counted by the stream pod into that Redis, exactly once although
//! the stream pod is deleted while they arrive; the archiver pod writing them
//! to S3; a batch Job from the pipeline's CronJob writing the day's results to
//! PostgreSQL; and `/metrics` of every pod. The pods reach the servers of `scripts/services.sh` through
//! Services without selectors whose endpoints are the node's bridge address,
//! by name (CoreDNS) and cluster address (kube-proxy), as a cluster reaches
//! managed services outside it.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auth_core::ports::{ServingStore, TopicPartition};
use auth_core::{Utility, utility_topic};
use auth_master::MasterStore;
use auth_master::archiver::archive_progress;
use auth_redis::RedisStore;
use serde_json::{Value, json};

/// The host side of the node's pod bridge, where pods reach this machine's servers.
const NODE_ADDRESS: &str = "10.88.0.1";
/// Kafka's listener for pods (scripts/kube-node.sh).
const NODE_KAFKA_PORT: u16 = 9094;
const NAME: &str = "e2e";
const PARTITIONS: u32 = 2;
const READINGS: u64 = 3_000;
/// Pods start, pull nothing, and become ready; the first start also creates topics.
const READY: Duration = Duration::from_secs(240);
const PROCESSED: Duration = Duration::from_secs(120);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn services_dir() -> String {
    std::env::var("AUTH_SERVICES_DIR")
        .unwrap_or_else(|_| format!("{}/.cache/auth/services", std::env::var("HOME").unwrap_or_default()))
}

fn kubeconfig() -> String {
    std::env::var("AUTH_KUBECONFIG").unwrap_or_else(|_| format!("{}/kube/kubeconfig", services_dir()))
}

/// Helm as `scripts/services.sh start kube` installs it.
fn helm() -> Command {
    let mut command = Command::new(format!("{}/kube/helm", services_dir()));
    command.env("KUBECONFIG", kubeconfig()).current_dir(repository());
    command
}

/// The managed Redis' image on the test node (scripts/kube-node.sh builds it from Debian's redis-server).
const REDIS_IMAGE: &str = "auth.local/redis:7.0";

/// One HTTP/1.0 request; returns the status and the body.
fn http(address: &str, request: &str) -> (u16, String) {
    try_http(address, request).unwrap_or_else(|err| panic!("{address}: {err}"))
}

fn try_http(address: &str, request: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Runs `command`; panics with its output unless it succeeds; returns its stdout.
fn run(command: &mut Command, input: Option<&str>) -> String {
    let described = format!("{command:?}");
    command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|err| panic!("{described}: {err}"));
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{described} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// The test's namespace on the test cluster, deleted at the end unless the
/// test failed; the operator's Helm release in it is uninstalled with it.
struct Namespace {
    name: String,
    dir: tempfile::TempDir,
    release: Option<String>,
}

impl Namespace {
    fn create() -> Self {
        let path = kubeconfig();
        assert!(Path::new(&path).exists(), "no control plane: {path} is missing (scripts/services.sh start kube)");
        let name = format!("e2e-{:08x}", fastrand::u32(..));
        let namespace = Self { name, dir: tempfile::tempdir().unwrap(), release: None };
        namespace.kubectl(&["create", "namespace", &namespace.name], None);
        namespace
    }

    fn kubectl(&self, args: &[&str], input: Option<&str>) -> String {
        run(Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig()).arg("--namespace").arg(&self.name).args(args), input)
    }

    fn apply(&self, manifest: &Value) {
        self.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&manifest.to_string()));
    }

    fn get(&self, kind: &str, name: &str) -> Value {
        serde_json::from_str(&self.kubectl(&["get", kind, name, "-o", "json"], None)).unwrap()
    }

    fn auth(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_auth"));
        command.env("KUBECONFIG", kubeconfig()).env("RUST_LOG", "info");
        command
    }

    /// What a failing test needs to see: pods, their logs and events, the operator's log.
    fn explain(&self) -> String {
        let mut out = String::new();
        for args in [
            vec!["get", "pods", "-o", "wide"],
            vec!["describe", "pods"],
            vec!["logs", "--all-containers", "--prefix", "--tail", "40", "-l", "app.kubernetes.io/instance=e2e"],
            vec!["get", "events", "--sort-by", ".lastTimestamp"],
            vec!["logs", "--prefix", "--tail", "200", "-l", "app.kubernetes.io/name=auth-operator"],
            vec!["describe", "node", "auth-node"],
        ] {
            let output = Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig()).arg("-n").arg(&self.name).args(&args).output();
            if let Ok(output) = output {
                out += &format!("--- kubectl {}\n{}{}\n", args.join(" "), String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            }
        }
        out
    }

    fn wait_for<T>(&self, what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(Instant::now() < deadline, "{what} within {within:?}\n{}", self.explain());
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("namespace {} kept for inspection (helm uninstall {0} --namespace {0})", self.name);
            return;
        }
        // The pipelines go first, while their operator runs their finalizer;
        // else the namespace would wait for it forever.
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["delete", "utilitypipelines", "--all", "--namespace", &self.name, "--timeout=120s"])
            .output();
        if let Some(release) = self.release.take() {
            let _ = helm().args(["uninstall", &release, "--namespace", &self.name]).output();
        }
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// The operator as a user installs it: the chart, with this build's image,
/// watching only this namespace, its pod on the real node; waits for it to be Ready.
fn install_operator(namespace: &mut Namespace, image: &str) {
    let (repository, tag) = image.rsplit_once(':').unwrap();
    let release = namespace.name.clone();
    let placement = r#"{"nodeSelector": {"auth.dev/node": "real"},
        "tolerations": [{"key": "auth.dev/node", "operator": "Equal", "value": "real", "effect": "NoSchedule"}]}"#;
    let values = namespace.dir.path().join("values.json");
    std::fs::write(&values, placement).unwrap();
    let installed = helm()
        .args(["install", &release, "charts/auth", "--namespace", &namespace.name, "--wait", "--timeout", "180s"])
        .args(["--set", &format!("image.repository={repository}"), "--set", &format!("image.tag={tag}")])
        .args(["--set", &format!("watchNamespace={}", namespace.name), "--values", values.to_str().unwrap()])
        .output()
        .unwrap();
    namespace.release = Some(release.clone());
    assert!(
        installed.status.success(),
        "helm install: {}\n{}",
        String::from_utf8_lossy(&installed.stderr),
        namespace.explain()
    );
    let operator = namespace.get("deployment", &format!("{release}-auth"));
    assert_eq!(operator["status"]["readyReplicas"], 1, "the operator's pod is Ready: {operator}");
}

/// `auth keys` on the gateway's key Secret of the pipeline, as a user manages it.
fn gateway_keys(namespace: &Namespace, args: &[&str]) -> String {
    let secret = format!("{NAME}-gateway-keys");
    run(namespace.auth().args(["keys", "--secret", &secret, "--namespace", &namespace.name]).args(args), None)
}

/// A Service without a selector whose endpoint is `NODE_ADDRESS:port`: a server outside the cluster, by name.
fn external_service(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"ports": [{"name": "tcp", "port": port, "targetPort": port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4", "ports": [{"name": "tcp", "port": port, "protocol": "TCP"}],
         "endpoints": [{"addresses": [NODE_ADDRESS], "conditions": {"ready": true}}]},
    ]})
}

fn condition(pipeline: &Value, type_: &str) -> Option<(String, String)> {
    pipeline["status"]["conditions"].as_array()?.iter().find(|condition| condition["type"] == type_).map(|condition| {
        (condition["status"].as_str().unwrap_or_default().to_owned(), condition["message"].as_str().unwrap_or_default().to_owned())
    })
}

/// Noon UTC yesterday: the readings sent from it (for two hours and a bit)
/// fall in every US region's local day of yesterday's date, the day the batch computes.
fn yesterday_ms() -> i64 {
    const DAY: i64 = 86_400_000;
    let now = auth_core::now_ms();
    now - now.rem_euclid(DAY) - DAY + 12 * 3_600_000
}

/// A Job from the pipeline's CronJob, as its schedule would start it, for one
/// date (as on-call reruns a day: the test may cross midnight, which moves
/// the batch's default day).
fn batch_job(namespace: &Namespace, name: &str, date: &str) -> Value {
    let cronjob = namespace.get("cronjob", &format!("{NAME}-batch"));
    let mut template = cronjob["spec"]["jobTemplate"].clone();
    template["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["batch", "--date", date]);
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": template["metadata"]["labels"]},
           "spec": template["spec"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster's node, Kafka, Redis, PostgreSQL and S3: scripts/test.sh runs it"]
async fn a_pipeline_runs_on_a_real_node_from_gateway_to_batch() {
    // The image of this build's binary, in the node's containerd.
    let image_name = "auth.local/auth-e2e";
    let built = run(
        Command::new("bash")
            .arg(repository().join("scripts/image.sh"))
            .env("AUTH_IMAGE_BINARY", env!("CARGO_BIN_EXE_auth"))
            .env("AUTH_IMAGE_NAME", image_name),
        None,
    );
    let built: Value = serde_json::from_str(built.lines().last().unwrap()).unwrap();
    let image = built["image"].as_str().unwrap().to_owned();
    run(Command::new("bash").arg(repository().join("scripts/services.sh")).arg("load-image").arg(built["archive"].as_str().unwrap()), None);
    // The volumes of earlier runs' deleted namespaces are offered again (the managed Redis claims one).
    run(Command::new("bash").arg(repository().join("scripts/services.sh")).arg("recycle-volumes"), None);

    let mut namespace = Namespace::create();
    let crd = run(namespace.auth().args(["crd", "--stdout"]), None);
    namespace.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&crd));
    for (service, port) in [("postgres", 5432), ("s3", 5000)] {
        namespace.apply(&external_service(service, port));
    }

    // The user's Secrets: the gateway's keys, and the S3 settings every pod gets as environment.
    let key = gateway_keys(&namespace, &["create", "--name", "e2e"]).trim().to_owned();
    namespace.kubectl(
        &["create", "secret", "generic", &format!("{NAME}-env"), "--from-literal=AWS_ENDPOINT_URL=http://s3:5000",
          "--from-literal=AWS_ACCESS_KEY_ID=auth-test", "--from-literal=AWS_SECRET_ACCESS_KEY=auth-test",
          "--from-literal=AUTH_DATABASE_PASSWORD=auth"],
        None,
    );

    let day_ms = yesterday_ms();
    let day = chrono::DateTime::from_timestamp_millis(day_ms).unwrap().date_naive().to_string();
    let database = auth_testkit::fresh_database(&auth_testkit::postgres_url(), "e2e").await;
    // The spec names the user only; the password comes from the Secret.
    let pod_database = database.replace("auth:auth@127.0.0.1", "auth@postgres");
    assert!(pod_database.contains("auth@postgres"), "{database}: the test expects the user auth with password auth");
    let archive_url = format!("s3://auth-test/{}", namespace.name);
    let pipeline_id = format!("{}.{NAME}", namespace.name);
    let spec = json!({
        "log": {"url": format!("kafka://{NODE_ADDRESS}:{NODE_KAFKA_PORT}"), "partitions": PARTITIONS},
        "archive": {"url": archive_url, "rollSecs": 2},
        "batch": {"databaseUrl": pod_database},
        "simulator": {"customers": 300, "seed": 17, "mode": "asFastAsPossible", "startMs": day_ms,
                      "outOfOrderShare": 0.0, "lateShare": 0.0, "duplicateShare": 0.0, "malformedShare": 0.0},
        "kubernetes": {
            "image": image, "streamReplicas": 1,
            "redis": {"image": REDIS_IMAGE, "storage": "1Gi"},
            "nodeSelector": {"auth.dev/node": "real"},
            "tolerations": [{"key": "auth.dev/node", "operator": "Equal", "value": "real", "effect": "NoSchedule"}],
        },
    });

    install_operator(&mut namespace, &image);
    namespace.apply(&json!({"apiVersion": "auth.dev/v1alpha1", "kind": "UtilityPipeline", "metadata": {"name": NAME}, "spec": spec}));
    namespace.wait_for("the pipeline to become Ready with every pod running on the node", READY, || {
        let pipeline = namespace.get("utilitypipeline", NAME);
        (condition(&pipeline, "Ready")?.0 == "True").then_some(())
    });
    let pods = namespace.kubectl(&["get", "pods", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}"], None);
    assert!(pods.lines().all(|node| node == "auth-node"), "every pod runs on the real node: {pods}");
    assert_eq!(pods.lines().count(), 6, "the operator, gateway, stream, archiver, API and Redis: {pods}");
    // A key issued while the gateway runs reaches it through its volume (checked at the end).
    let late_key = gateway_keys(&namespace, &["create", "--name", "issued later"]).trim().to_owned();
    let listed = gateway_keys(&namespace, &["list"]);
    assert!(listed.contains("\te2e\t") && listed.contains("\tissued later\t"), "{listed}");
    let claim = namespace.get("pvc", &format!("data-{NAME}-redis-0"));
    assert_eq!(claim["status"]["phase"], "Bound", "Redis' volume is one of the node's: {claim}");

    // A head-end system posts readings to the gateway's Service (its cluster address, through kube-proxy).
    let gateway = namespace.get("service", &format!("{NAME}-gateway"));
    let gateway_address = gateway["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let gateway_address = format!("{gateway_address}:8088");
    let (status, _) = http(
        &gateway_address,
        "POST /api/v1/readings HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]",
    );
    assert_eq!(status, 401, "a request without a key is refused");
    let spec_file = namespace.dir.path().join("spec.yaml");
    std::fs::write(&spec_file, serde_json::to_string(&spec).unwrap()).unwrap();
    let simulate = |start_ms: i64| {
        let mut command = namespace.auth();
        command.arg("simulate").arg("--config").arg(&spec_file).args([
            "--to",
            &format!("http://{gateway_address}"),
            "--key",
            &key,
            "--count",
            &(READINGS / 2).to_string(),
            "--start-ms",
            &start_ms.to_string(),
        ]);
        command
    };
    // The head-end's meters are registered first (results database and registry topic).
    let mut first_half = simulate(day_ms);
    first_half.args(["--register", "--database-url", &database, "--pipeline", &pipeline_id]);
    run(&mut first_half, None);
    // The second half arrives while the stream pod is deleted; its
    // replacement resumes from the last checkpoint.
    let second_half = std::thread::scope(|scope| {
        let sender = scope.spawn(|| run(&mut simulate(day_ms + 2 * 3_600_000), None));
        namespace.kubectl(&["delete", "pod", "-l", "app.kubernetes.io/component=stream", "--wait=true"], None);
        sender.join()
    });
    assert!(second_half.is_ok(), "the second half was posted");
    namespace.wait_for("a new stream pod to be ready", READY, || {
        let ready = namespace.kubectl(
            &["get", "pods", "-l", "app.kubernetes.io/component=stream", "-o",
              "jsonpath={range .items[*]}{.status.containerStatuses[0].ready}{\"\\n\"}{end}"],
            None,
        );
        (ready.trim() == "true").then_some(())
    });

    // The stream pods counted every reading into the managed Redis, once (read through its Service).
    let redis = namespace.get("service", &format!("{NAME}-redis"));
    let redis_url = format!("redis://{}:6379", redis["spec"]["clusterIP"].as_str().unwrap());
    let store = RedisStore::connect(&redis_url, &pipeline_id, 10_000, &[60_000, 3_600_000]).await.unwrap();
    let partitions: Vec<TopicPartition> = Utility::ALL
        .into_iter()
        .flat_map(|utility| {
            let topic: std::sync::Arc<str> = utility_topic(&pipeline_id, utility).into();
            (0..PARTITIONS).map(move |partition| TopicPartition { topic: std::sync::Arc::clone(&topic), partition })
        })
        .collect();
    let deadline = Instant::now() + PROCESSED;
    let counted = loop {
        let mut counted = 0;
        for partition in &partitions {
            counted += store.load_progress(partition).await.unwrap().map_or(0, |progress| progress.counts.counted);
        }
        if counted >= READINGS || Instant::now() >= deadline {
            break counted;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(counted, READINGS, "the stream pod's checkpoints count every posted reading\n{}", namespace.explain());

    // The archiver pod wrote them to S3 (the test reads the same bucket on loopback).
    let master = MasterStore::open(&archive_url).unwrap();
    let deadline = Instant::now() + PROCESSED;
    let archived = loop {
        let mut archived = 0;
        for partition in &partitions {
            archived += archive_progress(&master, partition).await.unwrap().archived_before;
        }
        if archived >= READINGS || Instant::now() >= deadline {
            break archived;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(archived, READINGS, "the archiver pod's progress covers every posted reading\n{}", namespace.explain());

    // Every auth pod serves /metrics on its metrics port (pod addresses are on
    // this machine's bridge), with the counts of the work it did.
    let pods = namespace.kubectl(
        &["get", "pods", "-l", "app.kubernetes.io/component!=redis", "-o",
          "jsonpath={range .items[*]}{.metadata.labels.app\\.kubernetes\\.io/component} {.status.podIP}{\"\\n\"}{end}"],
        None,
    );
    for line in pods.lines() {
        let (component, address) = line.split_once(' ').unwrap();
        let component = if component.is_empty() { "operator" } else { component };
        let (status, body) = http(&format!("{address}:9464"), "GET /metrics HTTP/1.0\r\n\r\n");
        assert_eq!(status, 200, "/metrics of the {component} pod");
        let counter = match component {
            "gateway" => "auth_ingest_readings_total",
            // The replacement stream pod may have had nothing left to count.
            "stream" => "auth_stream_assigned_partitions",
            "archiver" => "auth_archive_readings_total",
            _ => continue,
        };
        assert!(body.contains(counter), "the {component} pod's /metrics has {counter}: {body}");
    }

    // A day without master data fails; the pipeline's status names it while the Job retries.
    namespace.apply(&batch_job(&namespace, "batch-empty", "2000-01-01"));
    // The Job may be marked failed before its pods' reports are seen; the
    // status names the day once the operator reads them.
    let mut seen = String::new();
    namespace.wait_for("the failed day in the pipeline's status", READY, || {
        let pipeline = namespace.get("utilitypipeline", NAME);
        let (status, message) = condition(&pipeline, "Batch")?;
        (pipeline["status"]["batch"]["job"] == "batch-empty" && status == "False").then_some(())?;
        if message != seen {
            eprintln!("Batch condition: {message}");
            seen.clone_from(&message);
        }
        message.contains("1 day(s) failed: 2000-01-01: no master data").then_some(())
    });
    namespace.kubectl(&["delete", "job", "batch-empty", "--wait=true"], None);
    // The day of the readings computes into PostgreSQL.
    namespace.apply(&batch_job(&namespace, "batch-now", &day));
    namespace.wait_for("the batch Job to succeed", READY, || {
        let job = namespace.get("job", "batch-now");
        (job["status"]["succeeded"].as_i64() == Some(1)).then_some(())
    });
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database).await.unwrap();
    let (readings,): (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(readings), 0) AS BIGINT) FROM daily_customer_usage").fetch_one(&pool).await.unwrap();
    assert_eq!(readings as u64, READINGS, "the day's results hold every reading\n{}", namespace.explain());
    // The pipeline's status reports the run, from the report its pod left.
    let reported = namespace.wait_for("the batch run in the pipeline's status", PROCESSED, || {
        let pipeline = namespace.get("utilitypipeline", NAME);
        let run = pipeline["status"]["batch"].clone();
        (run["job"] == "batch-now" && run["outcome"] == "Succeeded" && run["report"].is_object()).then_some(pipeline)
    });
    let report = &reported["status"]["batch"]["report"];
    assert_eq!((report["daysRecomputed"].as_u64(), report["readings"].as_u64()), (Some(1), Some(READINGS)), "{reported}");
    assert_eq!(report["failedDays"], 0, "{reported}");
    let (batch, message) = condition(&reported, "Batch").unwrap();
    assert!(batch == "True" && message.contains("1 day(s) recomputed"), "{message}");

    // The spec changes: the simulator runs (through the gateway's Service,
    // with the key the operator issued it), and five-minute windows are added.
    let mut changed = spec.clone();
    changed["simulator"] = json!({"enabled": true, "customers": 300, "seed": 17, "mode": "realTime", "heartbeatSecs": 5});
    changed["windows"] = json!({"sizesSecs": [60, 300, 3600]});
    namespace.apply(&json!({"apiVersion": "auth.dev/v1alpha1", "kind": "UtilityPipeline", "metadata": {"name": NAME}, "spec": changed}));
    namespace.wait_for("the operator to apply the changed spec", READY, || {
        let pipeline = namespace.get("utilitypipeline", NAME);
        (pipeline["status"]["observedGeneration"] == pipeline["metadata"]["generation"]).then_some(())
    });
    for component in ["gateway", "stream", "archiver", "api", "simulator"] {
        namespace.kubectl(&["rollout", "status", &format!("deployment/{NAME}-{component}"), "--timeout=240s"], None);
    }
    let hashes = namespace.kubectl(
        &["get", "deployments", "-l", &format!("app.kubernetes.io/instance={NAME}"), "-o",
          "jsonpath={range .items[*]}{.spec.template.metadata.annotations.auth\\.dev/spec-hash}{\"\\n\"}{end}"],
        None,
    );
    let hashes: std::collections::BTreeSet<&str> = hashes.lines().collect();
    assert_eq!(hashes.len(), 1, "every workload reads the same, changed spec: {hashes:?}");

    // A customer of the simulated fleet, as the operator's dashboard sees them through the API's Service.
    let changed_file = namespace.dir.path().join("changed.yaml");
    std::fs::write(&changed_file, serde_json::to_string(&changed).unwrap()).unwrap();
    let first = run(namespace.auth().args(["simulate", "--count", "1", "--config"]).arg(&changed_file), None);
    let first: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let customer = first["customerId"].as_u64().unwrap();
    run(namespace.auth().args(["users", "add", "dispatcher", "--role", "operator", "--database-url", &database]), Some("e2e-password\n"));
    let api = namespace.get("service", &format!("{NAME}-api"));
    let api_address = format!("{}:80", api["spec"]["clusterIP"].as_str().unwrap());
    // After the roll, kube-proxy may still be moving the Service from the old pod to the new.
    namespace.wait_for("the API's Service to answer after the roll", READY, || {
        try_http(&api_address, "GET /healthz HTTP/1.0\r\n\r\n").ok().filter(|(status, _)| *status == 200)
    });
    let credentials = json!({"username": "dispatcher", "password": "e2e-password"}).to_string();
    let token_request =
        format!("POST /api/v1/tokens HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{credentials}", credentials.len());
    // One answer from the Service does not mean every connection reaches the
    // new pod yet ('No route to host' once after /healthz answered): a
    // refused connection is tried again, an answer is final.
    let (status, body) = namespace.wait_for("a bearer token from the API's Service", READY, || try_http(&api_address, &token_request).ok());
    assert_eq!(status, 201, "a bearer token for the operator account: {body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let usage = namespace.wait_for("the simulated customer's usage from the API's Service", PROCESSED, || {
        let (status, body) = try_http(
            &api_address,
            &format!("GET /api/v1/customers/{customer}/usage?granularity=minute HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"),
        )
        .ok()?;
        let usage: Value = serde_json::from_str(&body).ok()?;
        let points = usage["utilities"].as_array()?.iter().map(|series| series["points"].as_array().map_or(0, Vec::len)).sum::<usize>();
        (status == 200 && points > 0).then_some(usage)
    });
    assert_eq!(usage["customerId"], customer, "{usage}");
    // The new five-minute windows are served from the managed Redis.
    let store = RedisStore::connect(&redis_url, &pipeline_id, 10_000, &[60_000, 300_000, 3_600_000]).await.unwrap();
    let deadline = Instant::now() + PROCESSED;
    loop {
        let windows = store.customer_windows(customer).await.unwrap();
        if windows.iter().any(|window| window.slot.width_ms == 300_000) {
            break;
        }
        assert!(Instant::now() < deadline, "five-minute windows of customer {customer} within {PROCESSED:?}: {windows:?}\n{}", namespace.explain());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let simulator_pod = namespace.kubectl(
        &["get", "pods", "-l", "app.kubernetes.io/component=simulator", "-o", "jsonpath={.items[0].status.podIP}"],
        None,
    );
    let (status, body) = http(&format!("{simulator_pod}:9464"), "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(status == 200 && body.contains("auth_simulator_readings_total"), "the simulator pod's /metrics: {body}");

    // A pipeline of the same name in another namespace, with its own
    // operator: topics of its own, deleted with it; this one's stay.
    let mut other = Namespace::create();
    install_operator(&mut other, &image);
    let other_spec = json!({
        "log": {"url": format!("kafka://{NODE_ADDRESS}:{NODE_KAFKA_PORT}"), "partitions": 1},
        "archive": {"url": format!("s3://auth-test/{}", other.name)},
        "batch": {"databaseUrl": "postgres://auth@postgres/other"},
        "serving": {"url": format!("redis://{NODE_ADDRESS}:6379")},
        "deletionPolicy": "Delete",
        "kubernetes": {"image": image},
    });
    other.apply(&json!({"apiVersion": "auth.dev/v1alpha1", "kind": "UtilityPipeline", "metadata": {"name": NAME}, "spec": other_spec}));
    other.wait_for("the other pipeline's topics", READY, || {
        let pipeline = other.get("utilitypipeline", NAME);
        (condition(&pipeline, "Topics")?.0 == "True").then_some(())
    });
    let host_spec: auth_core::PipelineSpec = serde_json::from_value(json!({"log": {"url": "kafka://127.0.0.1:9092"}})).unwrap();
    let kafka = auth_adapters::log(&host_spec, "e2e", auth_adapters::Embedded::Refused).unwrap();
    let other_id = format!("{}.{NAME}", other.name);
    let topics = |pipeline: &str| Utility::ALL.into_iter().map(|utility| utility_topic(pipeline, utility)).collect::<Vec<_>>();
    for topic in topics(&other_id) {
        assert_eq!(kafka.partitions(&topic).await.unwrap(), 1, "{topic}: the other pipeline's own topic");
    }
    other.kubectl(&["delete", "utilitypipeline", NAME, "--timeout=120s"], None);
    for topic in topics(&other_id) {
        assert!(kafka.partitions(&topic).await.is_err(), "{topic} is deleted with its pipeline (deletionPolicy Delete)");
    }
    for topic in topics(&pipeline_id) {
        assert_eq!(kafka.partitions(&topic).await.unwrap(), PARTITIONS, "{topic} of the same-named pipeline stays");
    }

    // The key added to the Secret while the gateway ran is accepted once the
    // kubelet has refreshed the gateway's volume (its sync period is a minute).
    let reading = run(namespace.auth().args(["simulate", "--count", "1", "--config"]).arg(&changed_file), None);
    let body = format!("[{}]", reading.trim());
    let request = format!(
        "POST /api/v1/readings HTTP/1.0\r\nAuthorization: Bearer {late_key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    namespace.wait_for("the gateway to accept the key issued later", Duration::from_secs(180), || {
        let (status, _) = try_http(&gateway_address, &request).ok()?;
        (status == 202).then_some(())
    });
}
