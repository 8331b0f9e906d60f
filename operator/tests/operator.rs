//! The operator against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler from `scripts/services.sh start
//! kube`) and real Kafka. There is no kubelet: where a test needs pods to be
//! available it says so and sets the workloads' status itself, as a kubelet
//! and the controllers would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use auth_core::ports::ReadingLog;
use auth_kafka::{KafkaLog, TopicSettings};
use auth_operator::controller::PAUSED_ANNOTATION;
use auth_operator::crd::{UtilityPipeline, definition};
use auth_operator::{Client, Context, LeaderLease};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(60);

fn kubeconfig_path() -> String {
    std::env::var("AUTH_KUBECONFIG").unwrap_or_else(|_| {
        let services = std::env::var("AUTH_SERVICES_DIR")
            .unwrap_or_else(|_| format!("{}/.cache/auth/services", std::env::var("HOME").unwrap_or_default()));
        format!("{services}/kube/kubeconfig")
    })
}

/// A client of the test control plane, with the CRD installed, and a namespace of the test's own.
struct Cluster {
    client: Client,
    namespace: String,
}

/// The operators' logs go to the tests' captured output, which a failed test
/// prints (one test's operator once did not stop, and nothing said why).
fn log_to_the_tests() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,auth_operator=debug,kube_runtime=debug")
        .try_init();
}

impl Cluster {
    async fn start(test: &str) -> Self {
        log_to_the_tests();
        let path = kubeconfig_path();
        let kubeconfig = Kubeconfig::read_from(&path)
            .unwrap_or_else(|err| panic!("no control plane: {path}: {err} (scripts/services.sh start kube)"));
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig");
        let client = Client::try_from(config).expect("client");
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.patch("utilitypipelines.auth.dev", &PatchParams::apply("auth-operator-tests").force(), &Patch::Apply(&definition()))
            .await
            .unwrap_or_else(|err| panic!("installing the CRD on the control plane at {path}: {err}"));
        eventually("the CRD to be established", || {
            let crds = crds.clone();
            async move {
                let crd = crds.get("utilitypipelines.auth.dev").await.ok()?;
                let conditions = crd.status?.conditions?;
                conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
            }
        })
        .await;
        let namespace = format!("{test}-{}", fastrand::u32(..));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("namespace");
        namespaces.create(&PostParams::default(), &object).await.expect("create the test namespace");
        Self { client, namespace }
    }

    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn operator(&self, identity: &str) -> Operator {
        Operator::start(self.client.clone(), &self.namespace, identity)
    }

    async fn apply(&self, pipeline: &serde_json::Value) -> UtilityPipeline {
        let object: UtilityPipeline = serde_json::from_value(pipeline.clone()).expect("pipeline");
        self.api::<UtilityPipeline>()
            .patch(&object.name_any(), &PatchParams::apply("auth-operator-tests").force(), &Patch::Apply(&object))
            .await
            .expect("apply the pipeline")
    }

    async fn pipeline(&self, name: &str) -> Option<UtilityPipeline> {
        self.api::<UtilityPipeline>().get_opt(name).await.expect("read the pipeline")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("namespace {} kept for inspection", self.namespace);
            return;
        }
        let (client, namespace) = (self.client.clone(), self.namespace.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                // The test's operator is gone: the pipelines' finalizers go
                // with it, or the namespace would stay Terminating for good.
                let pipelines: Api<UtilityPipeline> = Api::namespaced(client.clone(), &namespace);
                for pipeline in pipelines.list(&Default::default()).await.map(|list| list.items).unwrap_or_default() {
                    let unfinalized = Patch::Merge(json!({"metadata": {"finalizers": null}}));
                    let _ = pipelines.patch(&pipeline.name_any(), &PatchParams::default(), &unfinalized).await;
                }
                let namespaces: Api<Namespace> = Api::all(client);
                let _ = namespaces.delete(&namespace, &DeleteParams::default()).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// An operator replica running in this process.
struct Operator {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Operator {
    fn start(client: Client, namespace: &str, identity: &str) -> Self {
        let context = Arc::new(Context::new(client.clone(), identity).watching(Some(namespace.to_owned())));
        let lease = LeaderLease::new(client, namespace, "auth-operator", identity, Duration::from_secs(3));
        let (stop, stopped) = watch::channel(false);
        Self { stop, task: tokio::spawn(auth_operator::lead(lease, context, stopped)) }
    }

    /// Stops as `SIGTERM` does: finishes, gives the Lease up.
    async fn stop(self) {
        let _ = self.stop.send(true);
        // A stop waits for the reconciles in flight; one that never ends
        // fails the test here instead of hanging the whole suite.
        match tokio::time::timeout(WAIT, self.task).await {
            Ok(outcome) => outcome.expect("operator task"),
            Err(_) => panic!("the operator did not stop within {WAIT:?}: a reconcile in flight never finished"),
        }
    }

    /// Dies at once, as `kill -9` would: whatever it was doing is cut off and the Lease is left to expire.
    fn kill(self) {
        self.task.abort();
    }
}

async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(WAIT, what, probe).await
}

async fn eventually_within<T, F, Fut>(wait: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_explained(wait, what, probe, || async { String::new() }).await
}

/// Waits for `probe`; on a timeout, the failure says what `explain` found then
/// (the last state seen), so that a slow cluster can be told from a stuck one.
async fn eventually_explained<T, F, Fut, E, EFut>(wait: Duration, what: &str, mut probe: F, explain: E) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
    E: FnOnce() -> EFut,
    EFut: std::future::Future<Output = String>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            let state = explain().await;
            panic!("timed out after {wait:?} waiting for {what}; last state seen:\n{state}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pipeline's conditions, its Redis claim, pod and StatefulSet, and the namespace's events: what a user would look at.
async fn describe_redis(cluster: &Cluster, name: &str) -> String {
    let mut out = String::new();
    if let Some(pipeline) = cluster.pipeline(name).await {
        let conditions = pipeline.status.map(|status| status.conditions).unwrap_or_default();
        for condition in conditions {
            out += &format!("  pipeline {}={} ({}): {}\n", condition.type_, condition.status, condition.reason, condition.message);
        }
    }
    let claims: Api<PersistentVolumeClaim> = cluster.api();
    match claims.get_opt(&format!("data-{name}-redis-0")).await {
        Ok(Some(claim)) => out += &format!("  claim: {:?}\n", claim.status.and_then(|status| status.phase)),
        other => out += &format!("  claim: {other:?}\n"),
    }
    let pods: Api<Pod> = cluster.api();
    match pods.get_opt(&format!("{name}-redis-0")).await {
        Ok(Some(pod)) => {
            let status = pod.status.unwrap_or_default();
            out += &format!("  pod: {:?} on {:?}, conditions {:?}\n", status.phase, pod.spec.and_then(|spec| spec.node_name), status.conditions);
        }
        other => out += &format!("  pod: {other:?}\n"),
    }
    if let Ok(Some(set)) = cluster.api::<StatefulSet>().get_opt(&format!("{name}-redis")).await {
        out += &format!("  StatefulSet status: {:?}\n", set.status);
    }
    let events: Api<Event> = cluster.api();
    if let Ok(list) = events.list(&Default::default()).await {
        for event in list.items.iter().rev().take(15) {
            out += &format!("  event {} {:?}: {:?}\n", event.involved_object.name.as_deref().unwrap_or("?"), event.reason, event.message);
        }
    }
    out
}

fn kafka() -> KafkaLog {
    let url = auth_testkit::kafka_url();
    let bootstrap = auth_core::endpoint::kafka_bootstrap(&url).expect("Kafka URL");
    auth_testkit::require_server("Kafka", bootstrap.split(',').next().unwrap_or_default());
    KafkaLog::connect(&url, TopicSettings { replication_factor: 1, retention_ms: 3_600_000, retention_bytes: 1 << 20 })
        .expect("Kafka")
}

/// A pipeline manifest on the test Kafka; `name` is unique per run, since topics are named after it.
fn manifest(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut full = json!({
        "log": {"url": auth_testkit::kafka_url(), "partitions": 2},
        "archive": {"url": "s3://auth-test/operator-tests"},
        // Kwok runs no pod, so nothing connects to it.
        "batch": {"databaseUrl": "postgres://auth@postgres:5432/auth"},
        "utilities": ["electricity", "water"],
        "kubernetes": {"image": "auth:test", "streamReplicas": 1},
    });
    merge(&mut full, spec);
    json!({"apiVersion": "auth.dev/v1alpha1", "kind": "UtilityPipeline", "metadata": {"name": name}, "spec": full})
}

fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, patch) => *base = patch,
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", fastrand::u32(..) % 1_000_000)
}

fn condition(pipeline: &UtilityPipeline, type_: &str) -> Option<(String, String, String)> {
    let status = pipeline.status.as_ref()?;
    let found = status.conditions.iter().find(|condition| condition.type_ == type_)?;
    Some((found.status.clone(), found.reason.clone(), found.message.clone()))
}

/// The pipeline once the operator has observed its current generation.
async fn observed(cluster: &Cluster, name: &str) -> UtilityPipeline {
    eventually(&format!("the operator to observe {name}"), || async {
        let pipeline = cluster.pipeline(name).await?;
        let status = pipeline.status.as_ref()?;
        (status.observed_generation == pipeline.metadata.generation).then_some(pipeline)
    })
    .await
}

fn template_annotations(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment.spec.as_ref().and_then(|spec| spec.template.metadata.clone()).and_then(|meta| meta.annotations).unwrap_or_default()
}

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, pipeline: &UtilityPipeline) -> bool {
    meta.owner_references.iter().flatten().any(|owner| {
        owner.uid == pipeline.uid().unwrap_or_default() && owner.kind == "UtilityPipeline" && owner.controller == Some(true)
    })
}

async fn topic_partitions(kafka: &KafkaLog, topic: &str) -> Option<u32> {
    kafka.partitions(topic).await.ok()
}

macro_rules! control_plane_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs the Kubernetes control plane and Kafka: scripts/test.sh runs it"]
        async fn $name() {
            super::$name().await;
        }
    };
}

mod control_plane {
    control_plane_test!(applying_a_pipeline_creates_its_objects_and_changes_update_them_in_place);
    control_plane_test!(ready_follows_the_components);
    control_plane_test!(deletion_applies_the_policy_and_the_collector_removes_the_rest);
    control_plane_test!(invalid_manifests_are_refused_by_the_api_server_with_the_schema_message);
    control_plane_test!(rules_the_schema_cannot_express_are_reported_in_the_status);
    control_plane_test!(a_paused_pipeline_is_left_alone_and_says_so);
    control_plane_test!(of_two_operators_one_leads_and_the_other_takes_over);
    control_plane_test!(an_operator_killed_mid_reconcile_converges_after_restart);
    control_plane_test!(the_batch_cron_job_starts_jobs_that_run_to_completion);
}

async fn applying_a_pipeline_creates_its_objects_and_changes_update_them_in_place() {
    let cluster = Cluster::start("apply").await;
    let kafka = kafka();
    let operator = cluster.operator("only");
    let name = unique("apply");
    cluster.apply(&manifest(&name, json!({}))).await;
    let pipeline = observed(&cluster, &name).await;
    assert_eq!(condition(&pipeline, "Topics").map(|c| c.0), Some("True".into()), "{:?}", pipeline.status);
    // One per utility, the dead-letter topic and the meter registry's.
    assert_eq!(pipeline.status.as_ref().and_then(|s| s.topics), Some(4));
    // Topics are named after the namespace too: a same-named pipeline of another namespace has its own.
    let id = format!("{}.{name}", cluster.namespace);
    for topic in [format!("{id}.electricity"), format!("{id}.water")] {
        assert_eq!(topic_partitions(&kafka, &topic).await, Some(2), "{topic}");
    }
    assert_eq!(topic_partitions(&kafka, &format!("{id}.dlq")).await, Some(1));
    assert_eq!(topic_partitions(&kafka, &format!("{id}.registry")).await, Some(1));

    let config_map = cluster.api::<ConfigMap>().get(&format!("{name}-spec")).await.expect("ConfigMap");
    assert!(owned_by(&config_map.metadata, &pipeline));
    let spec_yaml = config_map.data.as_ref().and_then(|data| data.get("pipeline.yaml")).expect("spec in the ConfigMap");
    assert!(spec_yaml.contains(&format!("redis://{name}-redis:6379")), "{spec_yaml}");
    let deployments = cluster.api::<Deployment>();
    let mut uids = BTreeMap::new();
    let mut spec_hashes = BTreeMap::new();
    let simulator = deployments.get(&format!("{name}-simulator")).await.expect("Deployment");
    assert_eq!(simulator.spec.and_then(|spec| spec.replicas), Some(0), "no simulator unless simulator.enabled");
    for (component, command) in [("gateway", "ingest"), ("stream", "stream"), ("archiver", "archive"), ("api", "api")] {
        let deployment = deployments.get(&format!("{name}-{component}")).await.expect("Deployment");
        assert!(owned_by(&deployment.metadata, &pipeline), "{component}");
        let managers: Vec<String> = deployment.metadata.managed_fields.iter().flatten().filter_map(|f| f.manager.clone()).collect();
        assert!(managers.contains(&"auth-operator".to_owned()), "{component}: {managers:?}");
        let pod = deployment.spec.as_ref().and_then(|spec| spec.template.spec.clone()).expect("pod spec");
        assert_eq!(pod.containers[0].image.as_deref(), Some("auth:test"));
        assert_eq!(pod.containers[0].args, Some(vec![command.to_owned()]));
        // Every role serves /metrics on the `metrics` port, which the pod's annotations name for Prometheus.
        let ports = pod.containers[0].ports.clone().unwrap_or_default();
        assert!(ports.iter().any(|port| port.name.as_deref() == Some("metrics") && port.container_port == 9464), "{component}");
        let annotations = template_annotations(&deployment);
        assert_eq!(annotations.get("prometheus.io/port").map(String::as_str), Some("9464"), "{component}");
        assert!(annotations.contains_key("auth.dev/spec-hash"), "{component}: {annotations:?}");
        let env = pod.containers[0].env.clone().unwrap_or_default();
        assert!(env.iter().any(|var| var.name == "AUTH_PIPELINE" && var.value.as_deref() == Some(id.as_str())), "{component}: {env:?}");
        if component == "gateway" {
            // The gateway's keys come from the user's Secret, and from the simulator's when it runs.
            let secrets: Vec<(String, Option<bool>)> = pod
                .volumes
                .iter()
                .flatten()
                .filter_map(|volume| volume.projected.as_ref()?.sources.clone())
                .flatten()
                .filter_map(|source| source.secret.map(|secret| (secret.name, secret.optional)))
                .collect();
            assert_eq!(secrets, vec![(format!("{name}-gateway-keys"), Some(false)), (format!("{name}-simulator-key"), Some(true))]);
            assert!(env.iter().any(|var| var.name == "AUTH_INGEST_KEYS"), "{env:?}");
        }
        // Never root, no privilege escalation, no capabilities, read-only root file system.
        let pod_security = pod.security_context.clone().unwrap_or_default();
        assert_eq!((pod_security.run_as_non_root, pod_security.run_as_user), (Some(true), Some(10001)), "{component}");
        let container_security = pod.containers[0].security_context.clone().unwrap_or_default();
        assert_eq!(container_security.allow_privilege_escalation, Some(false), "{component}");
        assert_eq!(container_security.read_only_root_filesystem, Some(true), "{component}");
        // The defaults: requests to be placed by, a memory limit, no CPU limit.
        let resources = pod.containers[0].resources.clone().unwrap_or_default();
        let quantity = |amounts: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, name: &str| {
            amounts.as_ref().and_then(|amounts| amounts.get(name)).map(|quantity| quantity.0.clone())
        };
        assert_eq!(quantity(&resources.requests, "cpu").as_deref(), Some("250m"), "{component}");
        assert_eq!(quantity(&resources.limits, "memory").as_deref(), Some("2Gi"), "{component}");
        assert_eq!(quantity(&resources.limits, "cpu"), None, "{component}");
        uids.insert(component, deployment.uid());
        spec_hashes.insert(component, annotations.get("auth.dev/spec-hash").cloned().unwrap_or_default());
    }
    let stateful_set = cluster.api::<StatefulSet>().get(&format!("{name}-redis")).await.expect("Redis StatefulSet");
    assert!(owned_by(&stateful_set.metadata, &pipeline));
    let redis_args = stateful_set.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.containers[0].args.clone());
    assert!(redis_args.unwrap_or_default().windows(2).any(|pair| pair == ["--appendonly", "yes"]));
    for service in [format!("{name}-redis"), format!("{name}-api"), format!("{name}-gateway")] {
        let service = cluster.api::<Service>().get(&service).await.expect("Service");
        assert!(owned_by(&service.metadata, &pipeline));
    }
    let cron_job = cluster.api::<CronJob>().get(&format!("{name}-batch")).await.expect("CronJob");
    assert!(owned_by(&cron_job.metadata, &pipeline));
    assert_eq!(cron_job.spec.as_ref().map(|spec| spec.schedule.as_str()), Some("30 11 * * *"));
    // The real controller manager turned the Deployment into a ReplicaSet.
    eventually("a ReplicaSet of the stream Deployment", || async {
        let replica_sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = cluster.api();
        let list = replica_sets.list(&Default::default()).await.ok()?;
        list.items.iter().any(|rs| rs.name_any().starts_with(&format!("{name}-stream-"))).then_some(())
    })
    .await;

    cluster
        .apply(&manifest(
            &name,
            json!({"kubernetes": {"streamReplicas": 3, "resources": {"limits": {"memory": "1Gi"}}},
                   "windows": {"sizesSecs": [60]}, "log": {"partitions": 4}}),
        ))
        .await;
    let changed = observed(&cluster, &name).await;
    assert_eq!(changed.metadata.generation, Some(2));
    let stream = deployments.get(&format!("{name}-stream")).await.expect("Deployment");
    assert_eq!(stream.spec.as_ref().and_then(|spec| spec.replicas), Some(3));
    assert_eq!(stream.uid(), uids["stream"], "updated in place, not replaced");
    let limits = stream.spec.as_ref().and_then(|spec| spec.template.spec.as_ref()).and_then(|pod| pod.containers[0].resources.clone());
    let memory = limits.and_then(|resources| resources.limits?.get("memory").map(|quantity| quantity.0.clone()));
    assert_eq!(memory.as_deref(), Some("1Gi"));
    // The pods read the spec once, at their start: a new spec rolls every workload's pods.
    for component in ["gateway", "stream", "archiver", "api"] {
        let deployment = deployments.get(&format!("{name}-{component}")).await.expect("Deployment");
        let hash = template_annotations(&deployment).get("auth.dev/spec-hash").cloned();
        assert!(hash.is_some() && hash != spec_hashes.get(component).cloned(), "{component}: the pod template changed with the spec");
    }
    let config_map = cluster.api::<ConfigMap>().get(&format!("{name}-spec")).await.expect("ConfigMap");
    let spec_yaml = config_map.data.and_then(|data| data.get("pipeline.yaml").cloned()).unwrap_or_default();
    let spec = auth_core::spec::PipelineSpec::from_yaml(&spec_yaml, "ConfigMap").expect("the ConfigMap holds a valid spec");
    assert_eq!(spec.windows.sizes_secs, vec![60]);
    assert_eq!(topic_partitions(&kafka, &format!("{id}.water")).await, Some(4), "topics grow");
    let status = changed.status.expect("status");
    assert_eq!(status.components.get("stream").map(|c| c.target), Some(3));
    assert!(status.last_reconciled_spec.is_some_and(|spec| spec.contains("\"streamReplicas\":3")));

    // Partitions never shrink.
    cluster.apply(&manifest(&name, json!({"log": {"partitions": 1}}))).await;
    observed(&cluster, &name).await;
    assert_eq!(topic_partitions(&kafka, &format!("{id}.water")).await, Some(4));
    operator.stop().await;
    let names: Vec<String> = [".electricity", ".water", ".dlq", ".registry"].iter().map(|suffix| format!("{id}{suffix}")).collect();
    let _ = kafka.delete_topics(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

/// The real CronJob controller starts the batch on its schedule, and kwok's
/// node runs the Job's pod to completion.
async fn the_batch_cron_job_starts_jobs_that_run_to_completion() {
    let cluster = Cluster::start("batch").await;
    let operator = cluster.operator("only");
    let name = unique("batch");
    cluster.apply(&manifest(&name, json!({"kubernetes": {"batchSchedule": "* * * * *"}}))).await;
    let cron_job = eventually("the batch CronJob", || async { cluster.api::<CronJob>().get_opt(&format!("{name}-batch")).await.ok()? })
        .await;
    let started_by_cron_job =
        |job: &Job| job.owner_references().iter().any(|owner| owner.kind == "CronJob" && Some(&owner.uid) == cron_job.uid().as_ref());
    // The next minute starts within 60 s; the controller acts on it within seconds.
    let job = eventually_within(Duration::from_secs(100), "a Job started by the CronJob", || async {
        let jobs = cluster.api::<Job>().list(&Default::default()).await.ok()?;
        jobs.items.into_iter().find(started_by_cron_job)
    })
    .await;
    let pod = job.spec.as_ref().and_then(|spec| spec.template.spec.clone()).expect("the Job's pod");
    assert_eq!(pod.containers[0].args, Some(vec!["batch".to_owned()]));
    let job_name = job.name_any();
    eventually(&format!("Job {job_name} to complete"), || async {
        let job = cluster.api::<Job>().get(&job_name).await.ok()?;
        (job.status?.succeeded? >= 1).then_some(())
    })
    .await;
    operator.stop().await;
}

async fn ready_follows_the_components() {
    let cluster = Cluster::start("ready").await;
    let operator = cluster.operator("only");
    let name = unique("ready");
    cluster.apply(&manifest(&name, json!({}))).await;
    // kwok's node runs the Deployments' pods; Redis's pod waits for a volume
    // its claim can bind, and the cluster has no provisioner.
    let message = eventually("Ready false, waiting for Redis alone", || async {
        let pipeline = cluster.pipeline(&name).await?;
        let (ready, reason, message) = condition(&pipeline, "Ready")?;
        (ready == "False" && reason == "ComponentsNotReady" && message == "waiting for ready replicas: redis 0/1")
            .then_some(message)
    })
    .await;
    let pipeline = cluster.pipeline(&name).await.expect("pipeline");
    assert_eq!(condition(&pipeline, "Stream").map(|c| (c.0, c.2)), Some(("True".into(), "1/1 replicas ready".into())), "{message}");
    assert_eq!(condition(&pipeline, "Redis").map(|c| c.1), Some("Unavailable".into()));

    let volumes: Api<PersistentVolume> = Api::all(cluster.client.clone());
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-redis")},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "hostPath": {"path": format!("/tmp/{name}")},
                 "claimRef": {"namespace": cluster.namespace, "name": format!("data-{name}-redis-0")}}
    }))
    .expect("volume");
    volumes.create(&PostParams::default(), &volume).await.expect("create the volume");
    // The status that says Ready also shows every component's replicas ready.
    let status = eventually_explained(
        WAIT,
        "Ready true once Redis has its volume",
        || async {
            let pipeline = cluster.pipeline(&name).await?;
            (condition(&pipeline, "Ready")?.0 == "True").then_some(pipeline.status?)
        },
        || describe_redis(&cluster, &name),
    )
    .await;
    for component in ["gateway", "stream", "archiver", "api", "redis"] {
        let replicas = status.components.get(component).copied().unwrap_or_default();
        assert!(replicas.ready >= replicas.target && replicas.target > 0, "{component}: {replicas:?}");
    }
    operator.stop().await;
    let _ = volumes.delete(&format!("{name}-redis"), &DeleteParams::default()).await;
}

async fn deletion_applies_the_policy_and_the_collector_removes_the_rest() {
    let cluster = Cluster::start("delete").await;
    let kafka = kafka();
    let operator = cluster.operator("only");
    let cases = [
        (unique("delete"), json!({"deletionPolicy": "Delete"}), false),
        (unique("retain"), json!({"deletionPolicy": "Retain"}), true),
        (unique("protected"), json!({"deletionPolicy": "Delete", "deletionProtection": true}), true),
    ];
    for (name, spec, _) in &cases {
        cluster.apply(&manifest(name, spec.clone())).await;
        let pipeline = observed(&cluster, name).await;
        assert!(pipeline.finalizers().contains(&"auth.dev/topics".to_owned()));
    }
    for (name, _, topics_kept) in &cases {
        cluster.api::<UtilityPipeline>().delete(name, &DeleteParams::default()).await.expect("delete");
        eventually(&format!("{name} to be gone (finalizer run)"), || async { cluster.pipeline(name).await.is_none().then_some(()) })
            .await;
        let topic = format!("{}.{name}.water", cluster.namespace);
        let exists = topic_partitions(&kafka, &topic).await.is_some();
        assert_eq!(exists, *topics_kept, "{topic}");
        eventually(&format!("the garbage collector to remove what {name} owned"), || async {
            let deployments = cluster.api::<Deployment>().get_opt(&format!("{name}-stream")).await.ok()?;
            let config_map = cluster.api::<ConfigMap>().get_opt(&format!("{name}-spec")).await.ok()?;
            (deployments.is_none() && config_map.is_none()).then_some(())
        })
        .await;
        if *topics_kept {
            let names: Vec<String> =
                [".electricity", ".water", ".dlq", ".registry"].iter().map(|s| format!("{}.{name}{s}", cluster.namespace)).collect();
            let _ = kafka.delete_topics(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
        }
    }
    operator.stop().await;
}

async fn invalid_manifests_are_refused_by_the_api_server_with_the_schema_message() {
    let cluster = Cluster::start("invalid").await;
    let api = cluster.api::<UtilityPipeline>();
    let cases = [
        (json!({"log": {"partitions": 0}}), "spec.log.partitions"),
        (json!({"deletionPolicy": "Destroy"}), "Unsupported value: \"Destroy\""),
        (json!({"stream": {"flushIntervalMs": 5000, "checkpointIntervalMs": 100}}), "stream.checkpointIntervalMs must be at least stream.flushIntervalMs"),
        (json!({"windows": {"sizesSecs": [7]}}), "windows.sizesSecs: every size must divide a day"),
        (json!({"simulator": {"lateShare": 1.5}}), "spec.simulator.lateShare"),
        (json!({"utilities": ["steam"]}), "Unsupported value: \"steam\""),
    ];
    for (spec, message) in cases {
        let object = manifest(&unique("bad"), spec.clone());
        let pipeline: UtilityPipeline = match serde_json::from_value(object.clone()) {
            Ok(pipeline) => pipeline,
            Err(_) => {
                // Not even a valid Rust value: send the raw manifest, as kubectl would.
                let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
                    cluster.client.clone(),
                    &cluster.namespace,
                    &kube::api::ApiResource::erase::<UtilityPipeline>(&()),
                );
                let dynamic: kube::api::DynamicObject = serde_json::from_value(object).expect("dynamic object");
                let err = raw.create(&PostParams::default(), &dynamic).await.expect_err(&format!("{spec} must be refused"));
                assert!(err.to_string().contains(message), "{spec}: {err}");
                continue;
            }
        };
        let err = api.create(&PostParams::default(), &pipeline).await.expect_err(&format!("{spec} must be refused"));
        assert!(err.to_string().contains(message), "{spec}: {err}");
    }
}

async fn rules_the_schema_cannot_express_are_reported_in_the_status() {
    let cluster = Cluster::start("rules").await;
    let operator = cluster.operator("only");
    let name = unique("rules");
    cluster.apply(&manifest(&name, json!({"batch": {"databaseUrl": "oracle://db"}}))).await;
    let pipeline = observed(&cluster, &name).await;
    let (ready, reason, message) = condition(&pipeline, "Ready").expect("Ready condition");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.contains("batch.databaseUrl"), "{message}");
    assert!(cluster.api::<Deployment>().get_opt(&format!("{name}-stream")).await.expect("read").is_none());

    // What `auth up` accepts but no set of pods could share: a local archive and SQLite.
    let local = unique("local");
    cluster.apply(&manifest(&local, json!({"archive": {"url": "auth-data/master"}, "batch": {"databaseUrl": "sqlite://auth-data/results.db"}}))).await;
    let pipeline = observed(&cluster, &local).await;
    let (ready, reason, message) = condition(&pipeline, "Ready").expect("Ready condition");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.contains("archive.url") && message.contains("s3://"), "{message}");
    assert!(message.contains("batch.databaseUrl") && message.contains("database server"), "{message}");

    // A password would land in the ConfigMap and the status.
    let password = unique("password");
    cluster.apply(&manifest(&password, json!({"batch": {"databaseUrl": "postgres://auth:hunter2@db/auth"}}))).await;
    let pipeline = observed(&cluster, &password).await;
    let (ready, reason, message) = condition(&pipeline, "Ready").expect("Ready condition");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(message.contains("AUTH_DATABASE_PASSWORD") && message.contains(&format!("{password}-env")), "{message}");
    assert!(!message.contains("hunter2"), "the message names no password: {message}");
    let config_map = cluster.api::<ConfigMap>().get_opt(&format!("{password}-spec")).await.expect("read");
    assert!(config_map.is_none(), "no ConfigMap holds the password");
    operator.stop().await;
}

async fn a_paused_pipeline_is_left_alone_and_says_so() {
    let cluster = Cluster::start("paused").await;
    let operator = cluster.operator("only");
    let name = unique("paused");
    cluster.apply(&manifest(&name, json!({}))).await;
    observed(&cluster, &name).await;
    let api = cluster.api::<UtilityPipeline>();
    let pause = json!({"metadata": {"annotations": {PAUSED_ANNOTATION: "true"}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&pause)).await.expect("pause");
    eventually("the Paused condition", || async {
        let pipeline = cluster.pipeline(&name).await?;
        (condition(&pipeline, "Paused")?.0 == "True").then_some(())
    })
    .await;
    let scale = json!({"spec": {"kubernetes": {"streamReplicas": 2}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&scale)).await.expect("change");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stream = cluster.api::<Deployment>().get(&format!("{name}-stream")).await.expect("Deployment");
    assert_eq!(stream.spec.and_then(|spec| spec.replicas), Some(1), "a paused pipeline's change is not applied");
    let resume = json!({"metadata": {"annotations": {PAUSED_ANNOTATION: null}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&resume)).await.expect("resume");
    eventually("the change to be applied once resumed", || async {
        let stream = cluster.api::<Deployment>().get(&format!("{name}-stream")).await.ok()?;
        let pipeline = cluster.pipeline(&name).await?;
        (stream.spec?.replicas == Some(2) && condition(&pipeline, "Paused").is_none()).then_some(())
    })
    .await;
    operator.stop().await;
}

async fn lease_holder(cluster: &Cluster) -> Option<String> {
    let lease = cluster.api::<Lease>().get_opt("auth-operator").await.ok()??;
    lease.spec?.holder_identity.filter(|holder| !holder.is_empty())
}

async fn of_two_operators_one_leads_and_the_other_takes_over() {
    let cluster = Cluster::start("leader").await;
    let first = cluster.operator("first");
    let second = cluster.operator("second");
    let leader = eventually("a leader", || lease_holder(&cluster)).await;
    let name = unique("leader");
    cluster.apply(&manifest(&name, json!({}))).await;
    observed(&cluster, &name).await;
    // Only the leader acts: every event about the pipeline comes from it.
    let events: Api<k8s_openapi::api::events::v1::Event> = cluster.api();
    let reporters = eventually("events about the pipeline", || async {
        let list = events.list(&Default::default()).await.ok()?;
        let reporters: Vec<String> = list
            .items
            .iter()
            .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
            .filter_map(|event| event.reporting_instance.clone())
            .collect();
        (!reporters.is_empty()).then_some(reporters)
    })
    .await;
    assert!(reporters.iter().all(|reporter| *reporter == leader), "{reporters:?}, leader {leader}");

    let (leaving, staying, successor) = if leader == "first" { (first, second, "second") } else { (second, first, "first") };
    leaving.kill();
    let next = eventually("the other operator to take the Lease over", || async {
        lease_holder(&cluster).await.filter(|holder| holder == successor)
    })
    .await;
    assert_eq!(next, successor);
    cluster.apply(&manifest(&name, json!({"kubernetes": {"streamReplicas": 2}}))).await;
    observed(&cluster, &name).await;
    let stream = cluster.api::<Deployment>().get(&format!("{name}-stream")).await.expect("Deployment");
    assert_eq!(stream.spec.and_then(|spec| spec.replicas), Some(2));
    staying.stop().await;
    assert_eq!(lease_holder(&cluster).await, None, "a stopped operator gives the Lease up");
}

async fn an_operator_killed_mid_reconcile_converges_after_restart() {
    let cluster = Cluster::start("restart").await;
    let name = unique("restart");
    cluster.apply(&manifest(&name, json!({"kubernetes": {"streamReplicas": 2, "apiReplicas": 2}}))).await;
    for round in 0..4 {
        let operator = cluster.operator(&format!("attempt-{round}"));
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..1_500))).await;
        operator.kill();
    }
    let operator = cluster.operator("final");
    let pipeline = observed(&cluster, &name).await;
    assert_eq!(condition(&pipeline, "Topics").map(|c| c.0), Some("True".into()));
    for (component, replicas) in [("gateway", 1), ("stream", 2), ("archiver", 1), ("api", 2)] {
        let deployment = cluster.api::<Deployment>().get(&format!("{name}-{component}")).await.expect("Deployment");
        assert_eq!(deployment.spec.and_then(|spec| spec.replicas), Some(replicas), "{component}");
        assert!(owned_by(&deployment.metadata, &pipeline));
    }
    assert!(cluster.api::<CronJob>().get_opt(&format!("{name}-batch")).await.expect("read").is_some());
    operator.stop().await;
}
