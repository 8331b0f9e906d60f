//! The controller: reconciles each `UtilityPipeline` into its Kafka topics
//! and the objects of [`crate::objects`], and reports what it found.
//!
//! One reconciliation: a paused pipeline (annotation `auth.dev/paused=true`)
//! only gets its `Paused` condition; a spec that breaks a rule gets `Ready`
//! false with the rules it breaks; otherwise the topics are created or grown
//! (never shrunk) through the Kafka admin API, every object is server-side
//! applied with the field manager `auth-operator`, and the status says, per
//! component, how many replicas are wanted and ready. The finalizer
//! `auth.dev/topics` deletes the topics of a deleted pipeline when its
//! `deletionPolicy` is `Delete` and `deletionProtection` is off; the garbage
//! collector removes the rest through the owner references.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth_core::ports::{PortError, ReadingLog};
use auth_core::spec::{DeletionPolicy, PipelineSpec};
use auth_core::pipeline_topics;
use auth_kafka::{KafkaLog, TopicSettings};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch_status::Verdict;
use crate::crd::{ComponentReplicas, Condition, UtilityPipeline, UtilityPipelineStatus};
use crate::objects::{self, Desired};

/// The finalizer that runs the deletion policy.
pub const FINALIZER: &str = "auth.dev/topics";
/// `true` stops reconciliation of a pipeline.
pub const PAUSED_ANNOTATION: &str = "auth.dev/paused";
/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "auth-operator";

/// Reconciliations, by `result` (`ok`, `error`).
pub const METRIC_RECONCILES: &str = "auth_operator_reconciles_total";
/// Reconciliation time.
pub const METRIC_RECONCILE_DURATION: &str = "auth_operator_reconcile_duration_seconds";
/// Pipelines by readiness at their last reconciliation.
pub const METRIC_READY: &str = "auth_operator_pipeline_ready";

/// A failed reconciliation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("topics of pipeline {pipeline}: {source}")]
    Topics { pipeline: String, source: PortError },
    #[error("rendering the spec of pipeline {pipeline}: {source}")]
    Render { pipeline: String, source: serde_saphyr::SerializeError },
    #[error("issuing the simulator's gateway key of pipeline {pipeline}: {source}")]
    SimulatorKey { pipeline: String, source: auth_core::gateway_key::IssueError },
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error(
        "the UtilityPipeline custom resource definition is not installed in this cluster \
         (kubectl apply -f crds/, or install the chart charts/auth): {0}"
    )]
    CrdMissing(kube::Error),
}

/// What every reconciliation shares.
pub struct Context {
    client: Client,
    /// The one namespace watched, or every namespace.
    namespace: Option<String>,
    recorder: Recorder,
    kafka: Mutex<HashMap<String, Arc<KafkaLog>>>,
    failures: Mutex<HashMap<String, Failures>>,
}

/// A failing pipeline's consecutive failures and the message of its last `ReconcileFailed` event.
#[derive(Default)]
struct Failures {
    count: u32,
    last_message: Option<String>,
}

impl Context {
    /// A context that reports events as `reporter` (the operator's pod name).
    pub fn new(client: Client, reporter: &str) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.to_owned(), instance: Some(reporter.to_owned()) };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace: None,
            kafka: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Watches only the pipelines (and their objects) of `namespace`.
    pub fn watching(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// The Kafka admin client for a pipeline's log spec, kept per URL and topic settings.
    fn kafka(&self, pipeline: &str, spec: &PipelineSpec) -> Result<Arc<KafkaLog>, Error> {
        let url = spec.log.url.clone().unwrap_or_default();
        let settings = TopicSettings::from_spec(&spec.log);
        let key = format!("{url} {settings:?}");
        let mut clients = self.kafka.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(
            KafkaLog::connect(&url, settings)
                .map_err(|source| Error::Topics { pipeline: pipeline.to_owned(), source })?,
        );
        clients.insert(key, Arc::clone(&client));
        Ok(client)
    }

    async fn publish(&self, pipeline: &UtilityPipeline, type_: EventType, reason: &str, note: String) {
        let event = Event { type_, reason: reason.to_owned(), note: Some(note), action: "Reconcile".to_owned(), secondary: None };
        if let Err(err) = self.recorder.publish(&event, &pipeline.object_ref(&())).await {
            tracing::warn!(pipeline = %pipeline.name_any(), error = %err, "could not publish an event");
        }
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = failures.entry(key.to_owned()).or_default();
        entry.count += 1;
        entry.count
    }

    fn forget_failures(&self, key: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }

    /// Whether `message` differs from the pipeline's last failure (which it then becomes).
    fn failure_is_new(&self, key: &str, message: &str) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = failures.entry(key.to_owned()).or_default();
        if entry.last_message.as_deref() == Some(message) {
            return false;
        }
        entry.last_message = Some(message.to_owned());
        true
    }
}

fn key_of(pipeline: &UtilityPipeline) -> String {
    format!("{}/{}", pipeline.namespace().unwrap_or_default(), pipeline.name_any())
}

/// The topics of a pipeline: one per utility, the dead-letter topic and the registry topic.
pub fn topic_names(pipeline: &str, spec: &PipelineSpec) -> Vec<String> {
    pipeline_topics(pipeline, spec).into_iter().map(|topic| topic.name).collect()
}

/// Fails with [`Error::CrdMissing`] unless the API server serves
/// `UtilityPipeline`s (in the watched namespace), so an operator started
/// before its CRD says so at once instead of retrying its watch forever.
pub async fn require_crd(context: &Context) -> Result<(), Error> {
    match context.api::<UtilityPipeline>().list_metadata(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::CrdMissing(kube::Error::Api(status))),
        Err(err) => Err(Error::Kube(err)),
    }
}

/// Runs the controller over the watched namespaces until `shutdown` resolves.
pub async fn run(context: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    use futures::StreamExt;
    let watch = watcher::Config::default();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=auth-operator");
    Controller::new(context.api::<UtilityPipeline>(), watch)
        .owns(context.api::<Deployment>(), owned.clone())
        .owns(context.api::<StatefulSet>(), owned.clone())
        .owns(context.api::<CronJob>(), owned.clone())
        .owns(context.api::<ConfigMap>(), owned.clone())
        .owns(context.api::<Service>(), owned.clone())
        // The batch's Jobs belong to the CronJob; their pipeline is their instance label.
        .watches(context.api::<Job>(), owned, |job| {
            let pipeline = job.labels().get("app.kubernetes.io/instance")?.clone();
            Some(ObjectRef::new(&pipeline).within(&job.namespace()?))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move {
            match outcome {
                Ok((pipeline, action)) => tracing::debug!(%pipeline, ?action, "reconciled"),
                // `reconcile` has logged it already.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(err) => tracing::warn!(error = %err, "could not reconcile"),
            }
        })
        .await;
}

/// Reconciles one pipeline.
#[tracing::instrument(level = "info", skip_all, fields(pipeline = %key_of(&pipeline)))]
pub async fn reconcile(pipeline: Arc<UtilityPipeline>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let outcome = reconcile_once(Arc::clone(&pipeline), &context).await;
    let result = if outcome.is_ok() { "ok" } else { "error" };
    metrics::counter!(METRIC_RECONCILES, "result" => result).increment(1);
    metrics::histogram!(METRIC_RECONCILE_DURATION).record(started.elapsed().as_secs_f64());
    match &outcome {
        Ok(_) => context.forget_failures(&key_of(&pipeline)),
        Err(err) => {
            tracing::warn!(error = %err, "reconciliation failed");
            let message = err.to_string();
            // One event per distinct failure, not one per retry.
            if context.failure_is_new(&key_of(&pipeline), &message) {
                context.publish(&pipeline, EventType::Warning, "ReconcileFailed", message).await;
            }
        }
    }
    outcome
}

/// Retries a failed pipeline after 2 s, doubling up to 5 minutes.
pub fn error_policy(pipeline: Arc<UtilityPipeline>, _error: &Error, context: Arc<Context>) -> Action {
    let key = key_of(&pipeline);
    let failures = context.record_failure(&key);
    let delay = Duration::from_secs(2u64 << (failures.min(8) - 1)).min(Duration::from_secs(300));
    tracing::info!(pipeline = %key, failures, ?delay, "retrying");
    Action::requeue(delay)
}

fn is_paused(pipeline: &UtilityPipeline) -> bool {
    pipeline.annotations().get(PAUSED_ANNOTATION).is_some_and(|value| value == "true")
}

async fn reconcile_once(pipeline: Arc<UtilityPipeline>, context: &Context) -> Result<Action, Error> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let api: Api<UtilityPipeline> = Api::namespaced(context.client.clone(), &namespace);
    if is_paused(&pipeline) && pipeline.meta().deletion_timestamp.is_none() {
        let mut status = pipeline.status.clone().unwrap_or_default();
        let message = format!("annotation {PAUSED_ANNOTATION}=true: changes are not applied until it is removed");
        set_condition(&mut status, "Paused", true, "PausedByAnnotation", &message, pipeline.meta().generation);
        write_status(&api, &pipeline, status).await?;
        return Ok(Action::await_change());
    }
    let status_api = &api;
    finalizer(&api, FINALIZER, pipeline, |event| async move {
        match event {
            Finalizer::Apply(pipeline) => apply(status_api, &pipeline, context).await,
            Finalizer::Cleanup(pipeline) => cleanup(&pipeline, context).await,
        }
    })
    .await
    .map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(err) | kube::runtime::finalizer::Error::CleanupFailed(err) => err,
        other => Error::Finalizer(other.to_string()),
    })
}

/// The rules a spec breaks, as one message; on Kubernetes the log must be
/// Kafka and the master data and results must be shared by every pod.
fn spec_problems(pipeline_name: &str, spec: &PipelineSpec) -> Option<String> {
    let mut problems: Vec<String> =
        spec.problems().into_iter().map(|problem| format!("{}: {}", problem.path, problem.message)).collect();
    if spec.log.url.is_none() {
        problems.push("log.url: the operator needs Kafka (kafka://host:port)".to_owned());
    }
    // Every pod has a file system of its own: the archiver, the batch and the
    // API would each write and read a different one.
    if !spec.archive.url.starts_with("s3://") {
        problems.push(format!(
            "archive.url: {:?} is a local directory, which each pod would have on its own; on Kubernetes the master data lives in S3 (s3://bucket/prefix)",
            spec.archive.url
        ));
    }
    // The spec lands in a ConfigMap and in the status, which are no place for a password.
    if let Ok(mut url) = url::Url::parse(&spec.batch.database_url)
        && url.password().is_some()
        && url.set_password(Some("***")).is_ok()
    {
        problems.push(format!(
            "batch.databaseUrl: {url} carries a password, which would be stored in the ConfigMap and the status; name only the user and put the password in the Secret {} under AUTH_DATABASE_PASSWORD",
            objects::environment_secret(pipeline_name),
        ));
    }
    if spec.batch.database_url.starts_with("sqlite:") {
        problems.push(format!(
            "batch.databaseUrl: {:?} is a file, which each pod would have on its own; on Kubernetes the results need a database server (postgres:// or mysql://)",
            spec.batch.database_url
        ));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

async fn apply(api: &Api<UtilityPipeline>, pipeline: &UtilityPipeline, context: &Context) -> Result<Action, Error> {
    let name = pipeline.name_any();
    let namespace = pipeline.namespace().unwrap_or_default();
    let generation = pipeline.meta().generation;
    let spec = &pipeline.spec.pipeline;
    let mut status = pipeline.status.clone().unwrap_or_default();
    status.conditions.retain(|condition| condition.type_ != "Paused");
    if let Some(message) = spec_problems(&name, spec) {
        set_condition(&mut status, "Ready", false, "InvalidSpec", &message, generation);
        status.observed_generation = generation;
        if write_status(api, pipeline, status).await? {
            context.publish(pipeline, EventType::Warning, "InvalidSpec", message).await;
        }
        metrics::gauge!(METRIC_READY, "pipeline" => key_of(pipeline)).set(0.0);
        return Ok(Action::await_change());
    }

    let id = objects::pipeline_id(pipeline);
    let topics = topic_names(&id, spec);
    let kafka = context.kafka(&name, spec)?;
    let ensured = ensure_topics(kafka.as_ref(), &id, spec).await;
    if let Err(source) = ensured {
        set_condition(&mut status, "Topics", false, "KafkaUnavailable", &source.to_string(), generation);
        set_condition(&mut status, "Ready", false, "TopicsNotReady", &source.to_string(), generation);
        status.observed_generation = generation;
        write_status(api, pipeline, status).await?;
        return Err(Error::Topics { pipeline: name, source });
    }
    set_condition(&mut status, "Topics", true, "Created", &format!("{} topics: {}", topics.len(), topics.join(", ")), generation);
    status.topics = Some(topics.len() as u32);

    if spec.simulator.enabled == Some(true) {
        ensure_simulator_key(&context.client, pipeline).await?;
    }
    let desired = objects::desired(pipeline).map_err(|source| Error::Render { pipeline: name.clone(), source })?;
    let replicas = apply_objects(&context.client, &namespace, &desired).await?;
    for (component, replicas) in &replicas {
        let condition = capitalized(component);
        let message = format!("{}/{} replicas ready", replicas.ready, replicas.target);
        if replicas.ready >= replicas.target {
            set_condition(&mut status, &condition, true, "Available", &message, generation);
        } else {
            set_condition(&mut status, &condition, false, "Unavailable", &message, generation);
        }
    }
    if spec.serving.url.is_some() {
        set_condition(&mut status, "Redis", true, "External", "serving.url names the Redis", generation);
    }
    let last_batch = last_batch_run(&context.client, &namespace, &name).await?.map(|run| run.remembering(status.batch.as_ref()));
    match last_batch.as_ref().map(|run| (run, run.verdict())) {
        Some((run, Some(Verdict::Failed))) => set_condition(&mut status, "Batch", false, "LastRunFailed", &run.message(), generation),
        Some((run, Some(Verdict::Succeeded))) => {
            set_condition(&mut status, "Batch", true, "LastRunSucceeded", &run.message(), generation);
        }
        Some((run, None)) => set_condition(&mut status, "Batch", true, "Running", &run.message(), generation),
        None => {
            let schedule = format!("CronJob schedule {:?} (UTC); no run yet", spec.kubernetes.batch_schedule);
            set_condition(&mut status, "Batch", true, "Scheduled", &schedule, generation);
        }
    }
    // One event per run and verdict: a failed run still retrying and then given up on is one failure.
    if let Some(run) = &last_batch
        && let Some(verdict) = run.verdict()
        && status.batch.as_ref().is_none_or(|before| (&before.job, before.verdict()) != (&run.job, Some(verdict)))
    {
        let (type_, reason) = match verdict {
            Verdict::Failed => (EventType::Warning, "BatchFailed"),
            Verdict::Succeeded => (EventType::Normal, "BatchSucceeded"),
        };
        context.publish(pipeline, type_, reason, run.message()).await;
    }
    status.batch = last_batch;
    let waiting: Vec<String> = replicas
        .iter()
        .filter(|(_, replicas)| replicas.ready < replicas.target)
        .map(|(component, replicas)| format!("{component} {}/{}", replicas.ready, replicas.target))
        .collect();
    let ready = waiting.is_empty();
    status.components = replicas;
    if ready {
        set_condition(&mut status, "Ready", true, "Available", "every component is available", generation);
    } else {
        let message = format!("waiting for ready replicas: {}", waiting.join(", "));
        set_condition(&mut status, "Ready", false, "ComponentsNotReady", &message, generation);
    }
    let spec_changed = status.observed_generation != generation;
    status.observed_generation = generation;
    status.last_reconciled_spec = serde_json::to_string(spec).ok();
    let ready_changed = write_status(api, pipeline, status).await?;
    if spec_changed {
        context.publish(pipeline, EventType::Normal, "Applied", format!("generation {} applied", generation.unwrap_or(0))).await;
    }
    if ready_changed {
        let note = if ready { "every component is available".to_owned() } else { format!("waiting for {}", waiting.join(", ")) };
        context.publish(pipeline, EventType::Normal, if ready { "Ready" } else { "NotReady" }, note).await;
    }
    metrics::gauge!(METRIC_READY, "pipeline" => key_of(pipeline)).set(if ready { 1.0 } else { 0.0 });
    Ok(Action::requeue(if ready { Duration::from_secs(300) } else { Duration::from_secs(15) }))
}

async fn ensure_topics(kafka: &KafkaLog, pipeline: &str, spec: &PipelineSpec) -> Result<(), PortError> {
    for topic in pipeline_topics(pipeline, spec) {
        if topic.compacted {
            kafka.ensure_compacted_topic(&topic.name).await?;
        } else {
            kafka.ensure_topic(&topic.name, topic.partitions).await?;
        }
    }
    Ok(())
}

async fn cleanup(pipeline: &UtilityPipeline, context: &Context) -> Result<Action, Error> {
    let name = pipeline.name_any();
    let spec = &pipeline.spec.pipeline;
    let topics = topic_names(&objects::pipeline_id(pipeline), spec);
    let (reason, note) = if spec.deletion_protection {
        ("TopicsKept", format!("deletionProtection is on: topics {} kept", topics.join(", ")))
    } else if spec.deletion_policy == DeletionPolicy::Retain || spec.log.url.is_none() {
        ("TopicsKept", format!("deletionPolicy Retain: topics {} kept", topics.join(", ")))
    } else {
        let kafka = context.kafka(&name, spec)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        kafka.delete_topics(&names).await.map_err(|source| Error::Topics { pipeline: name.clone(), source })?;
        ("TopicsDeleted", format!("deletionPolicy Delete: topics {} deleted", topics.join(", ")))
    };
    tracing::info!(pipeline = %key_of(pipeline), reason, "pipeline deleted");
    context.publish(pipeline, EventType::Normal, reason, note).await;
    Ok(Action::await_change())
}

/// Creates the simulator's key Secret once; an existing one is kept, as the
/// running simulator and gateway use its key.
async fn ensure_simulator_key(client: &Client, pipeline: &UtilityPipeline) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &pipeline.namespace().unwrap_or_default());
    let name = objects::simulator_key_secret(&pipeline.name_any());
    if api.get_metadata_opt(&name).await?.is_some() {
        return Ok(());
    }
    let secret = objects::simulator_key(pipeline, auth_core::now_ms())
        .map_err(|source| Error::SimulatorKey { pipeline: pipeline.name_any(), source })?;
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %name, "simulator key issued");
            Ok(())
        }
        // Another reconciliation made it first.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The pipeline's newest batch Job and the report of its pod.
async fn last_batch_run(client: &Client, namespace: &str, pipeline: &str) -> Result<Option<crate::batch_status::BatchRun>, Error> {
    let selector = format!("app.kubernetes.io/instance={pipeline},app.kubernetes.io/component=batch");
    let jobs = Api::<Job>::namespaced(client.clone(), namespace).list(&ListParams::default().labels(&selector)).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace).list(&ListParams::default().labels(&selector)).await?;
    Ok(crate::batch_status::last_run(&jobs.items, &pods.items))
}

async fn server_side_apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    Ok(api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await?)
}

/// Applies every object; returns the replicas each component wants and has ready.
async fn apply_objects(client: &Client, namespace: &str, desired: &Desired) -> Result<BTreeMap<String, ComponentReplicas>, Error> {
    server_side_apply(client, namespace, &desired.config_map).await?;
    let mut replicas = BTreeMap::new();
    if let Some((stateful_set, service)) = &desired.redis {
        server_side_apply(client, namespace, service).await?;
        let applied = server_side_apply(client, namespace, stateful_set).await?;
        let status = applied.status.unwrap_or_default();
        let target = applied.spec.and_then(|spec| spec.replicas).unwrap_or(1);
        replicas.insert("redis".to_owned(), ComponentReplicas { target, ready: status.ready_replicas.unwrap_or(0) });
    }
    for (component, deployment) in &desired.deployments {
        let applied = server_side_apply(client, namespace, deployment).await?;
        let status = applied.status.unwrap_or_default();
        let target = applied.spec.and_then(|spec| spec.replicas).unwrap_or(1);
        let available = status.available_replicas.unwrap_or(0);
        replicas.insert(component.name().to_owned(), ComponentReplicas { target, ready: available });
    }
    server_side_apply(client, namespace, &desired.api_service).await?;
    server_side_apply(client, namespace, &desired.gateway_service).await?;
    server_side_apply(client, namespace, &desired.batch).await?;
    Ok(replicas)
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Sets a condition, keeping its transition time when its status did not change.
pub fn set_condition(status: &mut UtilityPipelineStatus, type_: &str, value: bool, reason: &str, message: &str, generation: Option<i64>) {
    let value = if value { "True" } else { "False" };
    let now = Timestamp::now().to_string();
    match status.conditions.iter_mut().find(|condition| condition.type_ == type_) {
        Some(condition) => {
            if condition.status != value {
                condition.last_transition_time = now;
            }
            condition.status = value.to_owned();
            condition.reason = reason.to_owned();
            condition.message = message.to_owned();
            condition.observed_generation = generation;
        }
        None => status.conditions.push(Condition {
            type_: type_.to_owned(),
            status: value.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

fn ready_of(status: Option<&UtilityPipelineStatus>) -> Option<String> {
    status?.conditions.iter().find(|condition| condition.type_ == "Ready").map(|condition| condition.status.clone())
}

/// Writes the status when it changed; true when `Ready` changed.
async fn write_status(api: &Api<UtilityPipeline>, pipeline: &UtilityPipeline, status: UtilityPipelineStatus) -> Result<bool, Error> {
    if pipeline.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let ready_changed = ready_of(pipeline.status.as_ref()) != ready_of(Some(&status));
    // Server-side apply of the whole status: what this manager stops setting goes.
    let patch = serde_json::json!({ "apiVersion": "auth.dev/v1alpha1", "kind": "UtilityPipeline", "status": status });
    api.patch_status(&pipeline.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(ready_changed)
}
