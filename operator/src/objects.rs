//! The objects a pipeline is made of, computed from its spec alone (no API
//! calls), so the controller applies them and tests compare them.
//!
//! For a pipeline `p`: ConfigMap `p-spec` (the spec every workload reads),
//! Deployments `p-gateway`, `p-stream`, `p-archiver`, `p-api` and
//! `p-simulator` (no replicas unless `simulator.enabled`), Services
//! `p-gateway` and `p-api`, CronJob `p-batch`, and unless `serving.url` names
//! a Redis, StatefulSet and Service `p-redis` (AOF on a persistent volume).
//! Each is owned by the pipeline, so the garbage collector removes it with it.
//!
//! The gateway reads its keys from the user's Secret `p-gateway-keys` and,
//! when the simulator runs, from the Secret `p-simulator-key` the operator
//! creates for it (the simulator's own key, and its hash); every
//! `auth` container takes the keys of the user's Secret `p-env`, when it
//! exists, as environment variables (S3's `AWS_*` settings, for instance).
//! Pods run on the nodes `kubernetes.nodeSelector` and `kubernetes.tolerations` allow.
//! Every pod template carries the hash of the spec its workload reads
//! (annotation `auth.dev/spec-hash`), so a spec change rolls the pods; pods
//! run as the image's non-root user with a read-only root file system, no
//! capabilities and the runtime's seccomp profile (`/tmp` is an `emptyDir`).
//! Topics, consumer groups and Redis keys are named after the pipeline's
//! namespace and name ([`pipeline_id`]), so same-named pipelines of two
//! namespaces never share them.

use std::collections::BTreeMap;

use auth_core::gateway_key::{IssueError, KeyFile, KeyScope, issue_key};
use auth_core::spec::{PipelineSpec, ResourceAmounts, ResourcesSpec, TaintEffect, Toleration, TolerationOperator};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    Secret, SecretEnvSource, SecretKeySelector, SecretProjection, SecurityContext, Service, ServicePort, ServiceSpec,
    Toleration as PodToleration, Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::UtilityPipeline;

/// Where workloads find the spec.
const SPEC_DIR: &str = "/etc/auth";
const SPEC_KEY: &str = "pipeline.yaml";
const METRICS_PORT: i32 = 9464;
const API_PORT: i32 = 8080;
const GATEWAY_PORT: i32 = 8088;
const REDIS_PORT: i32 = 6379;
/// Where the gateway finds its keys: the Secret `<pipeline>-gateway-keys`,
/// key `auth-keys.json`, and the simulator's key file beside it.
const GATEWAY_KEYS_DIR: &str = "/etc/auth-keys";
pub const GATEWAY_KEYS_FILE: &str = "auth-keys.json";
const SIMULATOR_KEYS_FILE: &str = "simulator-keys.json";
/// The keys of the Secret `<pipeline>-simulator-key`: the key, and a key file holding its hash.
pub const SIMULATOR_KEY: &str = "key";
/// The user of the `auth` image (scripts/image.sh, Dockerfile).
const AUTH_USER: i64 = 10001;
/// The user of the official Redis image.
const REDIS_USER: i64 = 999;
/// The pod template annotation holding the hash of the workloads' spec.
pub const SPEC_HASH_ANNOTATION: &str = "auth.dev/spec-hash";

/// A workload the operator runs as a Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Gateway,
    Stream,
    Archiver,
    Api,
    /// The fleet simulator, sending through the gateway's Service (demos).
    Simulator,
}

impl Component {
    pub const ALL: [Component; 5] =
        [Component::Gateway, Component::Stream, Component::Archiver, Component::Api, Component::Simulator];

    /// The name in object names, labels and status (`gateway`, `stream`, `archiver`, `api`).
    pub fn name(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Stream => "stream",
            Component::Archiver => "archiver",
            Component::Api => "api",
            Component::Simulator => "simulator",
        }
    }

    /// The `auth` subcommand it runs.
    fn command(self) -> &'static str {
        match self {
            Component::Gateway => "ingest",
            Component::Stream => "stream",
            Component::Archiver => "archive",
            Component::Api => "api",
            Component::Simulator => "simulate",
        }
    }

    pub fn replicas(self, spec: &PipelineSpec) -> i32 {
        let kubernetes = &spec.kubernetes;
        let replicas = match self {
            Component::Gateway => kubernetes.gateway_replicas,
            Component::Stream => kubernetes.stream_replicas,
            Component::Archiver => 1,
            Component::Api => kubernetes.api_replicas,
            Component::Simulator => u32::from(spec.simulator.enabled == Some(true)),
        };
        i32::try_from(replicas).unwrap_or(i32::MAX)
    }
}

/// Everything the pipeline owns, as it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub deployments: Vec<(Component, Deployment)>,
    pub api_service: Service,
    /// Where meters and head-end systems send readings (port 8088).
    pub gateway_service: Service,
    pub batch: CronJob,
    /// Absent when `serving.url` names an external Redis.
    pub redis: Option<(StatefulSet, Service)>,
}

/// The name of the pipeline's topics, consumer groups and Redis keys:
/// `<namespace>.<name>`, unique in the cluster (object names are unique only
/// in their namespace).
pub fn pipeline_id(pipeline: &UtilityPipeline) -> String {
    format!("{}.{}", pipeline.namespace().unwrap_or_default(), pipeline.name_any())
}

/// The Secret the gateway's keys come from (`auth keys create --keys-file
/// auth-keys.json`, then `kubectl create secret generic <pipeline>-gateway-keys
/// --from-file=auth-keys.json`); the user's, never the operator's.
pub fn gateway_keys_secret(pipeline: &str) -> String {
    object_name(pipeline, "gateway-keys")
}

/// The Secret holding the simulator's gateway key ([`SIMULATOR_KEY`]) and
/// its hash (`auth-keys.json`); the operator creates it, owned by the pipeline.
pub fn simulator_key_secret(pipeline: &str) -> String {
    object_name(pipeline, "simulator-key")
}

/// A new Secret [`simulator_key_secret`]: a gateway key issued for the
/// simulator, and the key file with its hash that the gateway reads.
pub fn simulator_key(pipeline: &UtilityPipeline, now_ms: i64) -> Result<Secret, IssueError> {
    let name = format!("simulator of {}", pipeline_id(pipeline));
    let (key, record) = issue_key(&name, &KeyScope::default(), now_ms)?;
    let key_file = serde_json::json!(KeyFile { keys: vec![record] }).to_string();
    Ok(Secret {
        metadata: metadata(pipeline, "simulator-key", "simulator"),
        type_: Some("Opaque".to_owned()),
        string_data: Some(BTreeMap::from([(SIMULATOR_KEY.to_owned(), key), (GATEWAY_KEYS_FILE.to_owned(), key_file)])),
        ..Secret::default()
    })
}

/// The Secret whose keys every `auth` container gets as environment
/// variables, when it exists: what stays out of the spec, such as
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_ENDPOINT_URL`. The user's.
pub fn environment_secret(pipeline: &str) -> String {
    object_name(pipeline, "env")
}

/// `name-suffix`, the name of an object of pipeline `name`.
pub fn object_name(pipeline: &str, suffix: &str) -> String {
    format!("{pipeline}-{suffix}")
}

/// The spec the workloads read: the pipeline's, pointed at the managed Redis when it has no other.
pub fn workload_spec(pipeline: &UtilityPipeline) -> PipelineSpec {
    let mut spec = pipeline.spec.pipeline.clone();
    if spec.serving.url.is_none() {
        spec.serving.url = Some(format!("redis://{}:{REDIS_PORT}", object_name(&pipeline.name_any(), "redis")));
    }
    spec
}

/// The labels of a pipeline's objects of one component.
pub fn labels(pipeline: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "auth".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), pipeline.to_owned()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "auth-operator".to_owned()),
    ])
}

fn selector_labels(pipeline: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), pipeline.to_owned()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
    ])
}

fn owner_reference(pipeline: &UtilityPipeline) -> Vec<OwnerReference> {
    pipeline.controller_owner_ref(&()).into_iter().collect()
}

fn metadata(pipeline: &UtilityPipeline, suffix: &str, component: &str) -> ObjectMeta {
    let name = pipeline.name_any();
    ObjectMeta {
        name: Some(object_name(&name, suffix)),
        namespace: pipeline.namespace(),
        labels: Some(labels(&name, component)),
        owner_references: Some(owner_reference(pipeline)),
        ..ObjectMeta::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), ..EnvVar::default() }
}

fn port(name: &str, container_port: i32) -> ContainerPort {
    ContainerPort { name: Some(name.to_owned()), container_port, ..ContainerPort::default() }
}

fn http_probe(path: &str, port_name: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port_name.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

/// The container of an `auth` workload: the subcommand, the spec mounted from the ConfigMap.
fn auth_container(pipeline: &UtilityPipeline, name: &str, command: &str) -> Container {
    let spec = &pipeline.spec.pipeline;
    Container {
        name: name.to_owned(),
        image: Some(spec.kubernetes.image.clone()),
        args: Some(vec![command.to_owned()]),
        env: Some(vec![
            env("AUTH_CONFIG", format!("{SPEC_DIR}/{SPEC_KEY}")),
            env("AUTH_PIPELINE", pipeline_id(pipeline)),
            env("AUTH_METRICS_LISTEN", format!("0.0.0.0:{METRICS_PORT}")),
        ]),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: environment_secret(&pipeline.name_any()), optional: Some(true) }),
            ..EnvFromSource::default()
        }]),
        volume_mounts: Some(vec![
            VolumeMount { name: "spec".to_owned(), mount_path: SPEC_DIR.to_owned(), read_only: Some(true), ..VolumeMount::default() },
            VolumeMount { name: "tmp".to_owned(), mount_path: "/tmp".to_owned(), ..VolumeMount::default() },
        ]),
        security_context: Some(restricted_container()),
        resources: Some(resource_requirements(&spec.kubernetes.resources)),
        ..Container::default()
    }
}

fn resource_requirements(resources: &ResourcesSpec) -> ResourceRequirements {
    let quantities = |amounts: &ResourceAmounts| {
        let quantities: BTreeMap<String, Quantity> = [("cpu", &amounts.cpu), ("memory", &amounts.memory)]
            .into_iter()
            .filter_map(|(name, amount)| Some((name.to_owned(), Quantity(amount.clone()?))))
            .collect();
        (!quantities.is_empty()).then_some(quantities)
    };
    ResourceRequirements {
        requests: quantities(&resources.requests),
        limits: quantities(&resources.limits),
        ..ResourceRequirements::default()
    }
}

/// What the `restricted` Pod Security Standard asks of a container, with a read-only root file system.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Capabilities::default() }),
        ..SecurityContext::default()
    }
}

/// A pod running as `user`, never as root, under the runtime's seccomp profile.
fn restricted_pod(user: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        fs_group: Some(user),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), ..SeccompProfile::default() }),
        ..PodSecurityContext::default()
    }
}

/// `pod`, placed on the nodes the spec's node selector and tolerations allow.
fn scheduled(pipeline: &UtilityPipeline, pod: PodSpec) -> PodSpec {
    let kubernetes = &pipeline.spec.pipeline.kubernetes;
    PodSpec {
        node_selector: (!kubernetes.node_selector.is_empty()).then(|| kubernetes.node_selector.clone()),
        tolerations: (!kubernetes.tolerations.is_empty())
            .then(|| kubernetes.tolerations.iter().map(pod_toleration).collect()),
        ..pod
    }
}

fn pod_toleration(toleration: &Toleration) -> PodToleration {
    let operator = match toleration.operator {
        TolerationOperator::Equal => "Equal",
        TolerationOperator::Exists => "Exists",
    };
    let effect = toleration.effect.map(|effect| match effect {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    });
    PodToleration {
        key: toleration.key.clone(),
        operator: Some(operator.to_owned()),
        value: toleration.value.clone(),
        effect: effect.map(str::to_owned),
        ..PodToleration::default()
    }
}

/// The volumes of an `auth` pod: the spec and a scratch `/tmp`.
fn auth_volumes(pipeline: &UtilityPipeline) -> Vec<Volume> {
    vec![spec_volume(pipeline), Volume { name: "tmp".to_owned(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() }]
}

/// The annotations of an `auth` pod template: scraping, and the hash of the spec it reads.
fn auth_pod_annotations(spec_hash: &str) -> BTreeMap<String, String> {
    let mut annotations = scrape_annotations();
    annotations.insert(SPEC_HASH_ANNOTATION.to_owned(), spec_hash.to_owned());
    annotations
}

fn spec_volume(pipeline: &UtilityPipeline) -> Volume {
    Volume {
        name: "spec".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: object_name(&pipeline.name_any(), "spec"),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn deployment(pipeline: &UtilityPipeline, component: Component, spec_hash: &str) -> Deployment {
    let name = pipeline.name_any();
    let mut container = auth_container(pipeline, component.name(), component.command());
    let mut volumes = auth_volumes(pipeline);
    let mut ports = vec![port("metrics", METRICS_PORT)];
    let vars = container.env.get_or_insert_with(Vec::new);
    match component {
        Component::Api => {
            vars.push(env_listen("AUTH_LISTEN", API_PORT));
            ports.push(port("http", API_PORT));
            container.readiness_probe = Some(http_probe("/healthz", "http"));
        }
        Component::Gateway => {
            vars.push(env_listen("AUTH_INGEST_LISTEN", GATEWAY_PORT));
            vars.push(env(
                "AUTH_INGEST_KEYS",
                format!("{GATEWAY_KEYS_DIR}/{GATEWAY_KEYS_FILE},{GATEWAY_KEYS_DIR}/{SIMULATOR_KEYS_FILE}"),
            ));
            ports.push(port("http", GATEWAY_PORT));
            container.readiness_probe = Some(http_probe("/healthz", "http"));
            container.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
                name: "gateway-keys".to_owned(),
                mount_path: GATEWAY_KEYS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            let key_file = |secret: String, path: &str, optional: bool| VolumeProjection {
                secret: Some(SecretProjection {
                    name: secret,
                    items: Some(vec![KeyToPath { key: GATEWAY_KEYS_FILE.to_owned(), path: path.to_owned(), ..KeyToPath::default() }]),
                    optional: Some(optional),
                }),
                ..VolumeProjection::default()
            };
            volumes.push(Volume {
                name: "gateway-keys".to_owned(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![
                        key_file(gateway_keys_secret(&name), GATEWAY_KEYS_FILE, false),
                        key_file(simulator_key_secret(&name), SIMULATOR_KEYS_FILE, true),
                    ]),
                    ..ProjectedVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
        Component::Simulator => {
            container.args.get_or_insert_with(Vec::new).extend([
                "--to".to_owned(),
                format!("http://{}:{GATEWAY_PORT}", object_name(&name, "gateway")),
                "--register".to_owned(),
            ]);
            vars.push(EnvVar {
                name: "AUTH_INGEST_KEY".to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: simulator_key_secret(&name),
                        key: SIMULATOR_KEY.to_owned(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
            container.readiness_probe = Some(http_probe("/healthz", "metrics"));
        }
        Component::Stream | Component::Archiver => {
            container.readiness_probe = Some(http_probe("/healthz", "metrics"));
        }
    }
    container.ports = Some(ports);
    let selector = selector_labels(&name, component.name());
    let mut pod_labels = labels(&name, component.name());
    pod_labels.extend(selector.clone());
    Deployment {
        metadata: metadata(pipeline, component.name(), component.name()),
        spec: Some(DeploymentSpec {
            replicas: Some(component.replicas(&pipeline.spec.pipeline)),
            selector: LabelSelector { match_labels: Some(selector), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(auth_pod_annotations(spec_hash)),
                    ..ObjectMeta::default()
                }),
                spec: Some(scheduled(
                    pipeline,
                    PodSpec {
                        containers: vec![container],
                        volumes: Some(volumes),
                        security_context: Some(restricted_pod(AUTH_USER)),
                        ..PodSpec::default()
                    },
                )),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The annotations Prometheus setups without the operator scrape pods by; the
/// chart's PodMonitor selects the same pods by the `managed-by` label and the `metrics` port.
fn scrape_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), METRICS_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ])
}

fn env_listen(name: &str, port: i32) -> EnvVar {
    env(name, format!("0.0.0.0:{port}"))
}

fn service(pipeline: &UtilityPipeline, component: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: metadata(pipeline, component, component),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&pipeline.name_any(), component)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn service_port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(target.to_owned())),
        ..ServicePort::default()
    }
}

/// Where the batch writes its report: the container's termination message,
/// which the kubelet keeps in the pod's status for the operator to read.
const TERMINATION_MESSAGE: &str = "/dev/termination-log";

fn batch_container(pipeline: &UtilityPipeline) -> Container {
    let mut container = auth_container(pipeline, "batch", "batch");
    container.env.get_or_insert_with(Vec::new).push(env("AUTH_BATCH_REPORT", TERMINATION_MESSAGE));
    container.termination_message_path = Some(TERMINATION_MESSAGE.to_owned());
    container.termination_message_policy = Some("FallbackToLogsOnError".to_owned());
    container
}

fn batch(pipeline: &UtilityPipeline, spec_hash: &str) -> CronJob {
    let name = pipeline.name_any();
    let spec = &pipeline.spec.pipeline;
    CronJob {
        metadata: metadata(pipeline, "batch", "batch"),
        spec: Some(CronJobSpec {
            schedule: spec.kubernetes.batch_schedule.clone(),
            time_zone: Some("Etc/UTC".to_owned()),
            concurrency_policy: Some("Forbid".to_owned()),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&name, "batch")), ..ObjectMeta::default() }),
                spec: Some(JobSpec {
                    backoff_limit: Some(3),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels(&name, "batch")),
                            annotations: Some(auth_pod_annotations(spec_hash)),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(scheduled(
                            pipeline,
                            PodSpec {
                                containers: vec![batch_container(pipeline)],
                                volumes: Some(auth_volumes(pipeline)),
                                security_context: Some(restricted_pod(AUTH_USER)),
                                restart_policy: Some("OnFailure".to_owned()),
                                ..PodSpec::default()
                            },
                        )),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    }
}

fn redis(pipeline: &UtilityPipeline) -> (StatefulSet, Service) {
    let name = pipeline.name_any();
    let managed = &pipeline.spec.pipeline.kubernetes.redis;
    let selector = selector_labels(&name, "redis");
    let mut pod_labels = labels(&name, "redis");
    pod_labels.extend(selector.clone());
    let container = Container {
        name: "redis".to_owned(),
        image: Some(managed.image.clone()),
        // Only the Service reaches it; Redis' protected mode would refuse
        // every client but loopback on a build that defaults it on (Debian's).
        args: Some(
            ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", "/data", "--protected-mode", "no"]
                .map(str::to_owned)
                .to_vec(),
        ),
        ports: Some(vec![port("redis", REDIS_PORT)]),
        volume_mounts: Some(vec![VolumeMount { name: "data".to_owned(), mount_path: "/data".to_owned(), ..VolumeMount::default() }]),
        security_context: Some(restricted_container()),
        resources: Some(resource_requirements(&managed.resources)),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".to_owned()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(managed.storage.clone()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let stateful_set = StatefulSet {
        metadata: metadata(pipeline, "redis", "redis"),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(object_name(&name, "redis")),
            selector: LabelSelector { match_labels: Some(selector), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(scheduled(
                    pipeline,
                    PodSpec {
                        containers: vec![container],
                        security_context: Some(restricted_pod(REDIS_USER)),
                        ..PodSpec::default()
                    },
                )),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    (stateful_set, service(pipeline, "redis", vec![service_port("redis", REDIS_PORT, "redis")]))
}

/// The objects of `pipeline` as its spec says they should be.
pub fn desired(pipeline: &UtilityPipeline) -> Result<Desired, serde_saphyr::SerializeError> {
    let spec_yaml = serde_saphyr::to_string(&workload_spec(pipeline))?;
    let config_map = ConfigMap {
        metadata: metadata(pipeline, "spec", "spec"),
        data: Some(BTreeMap::from([(SPEC_KEY.to_owned(), spec_yaml.clone())])),
        ..ConfigMap::default()
    };
    let spec_hash = hex::encode(Sha256::digest(spec_yaml.as_bytes()));
    Ok(Desired {
        config_map,
        deployments: Component::ALL
            .into_iter()
            .map(|component| (component, deployment(pipeline, component, &spec_hash)))
            .collect(),
        api_service: service(pipeline, "api", vec![service_port("http", 80, "http")]),
        gateway_service: service(pipeline, "gateway", vec![service_port("http", GATEWAY_PORT, "http")]),
        batch: batch(pipeline, &spec_hash),
        redis: pipeline.spec.pipeline.serving.url.is_none().then(|| redis(pipeline)),
    })
}
