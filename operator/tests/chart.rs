//! The Helm chart and the user's own path, with the tools a user has: `helm`
//! (lint, template) and `kubectl` against the test control plane.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use auth_operator::{Client, Context, LeaderLease};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;

fn services_dir() -> PathBuf {
    std::env::var("AUTH_SERVICES_DIR").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/auth/services"),
        PathBuf::from,
    )
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a tool of the test control plane and returns its stdout; fails the test with its output otherwise.
fn run(tool: &str, args: &[&str]) -> String {
    let kube = services_dir().join("kube");
    let program = if tool == "kubectl" { PathBuf::from(tool) } else { kube.join(tool) };
    let output = Command::new(&program)
        .args(args)
        .env("KUBECONFIG", kube.join("kubeconfig"))
        .current_dir(repository())
        .output()
        .unwrap_or_else(|err| panic!("{} is missing ({err}): scripts/services.sh start kube installs it", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{tool} {}: {}\n{stdout}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn render(namespace: &str, extra: &[&str]) -> String {
    let mut args = vec!["template", "auth", "charts/auth", "--namespace", namespace, "--kube-version", "1.35.4"];
    args.extend_from_slice(extra);
    run("helm", &args)
}

fn every_toggle() -> Vec<&'static str> {
    vec!["--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true", "--set", "grafanaDashboard.enabled=true"]
}

async fn client() -> Client {
    let path = services_dir().join("kube/kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|err| panic!("{}: {err} (scripts/services.sh start kube)", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

#[test]
#[ignore = "needs helm from scripts/services.sh start kube: scripts/test.sh runs it"]
fn the_chart_lints_and_renders_every_toggle() {
    run("helm", &["lint", "charts/auth", "--strict"]);
    let plain = render("auth-system", &[]);
    for kind in ["kind: ServiceAccount", "kind: ClusterRole", "kind: ClusterRoleBinding", "kind: Role", "kind: Deployment"] {
        assert!(plain.contains(kind), "{kind} missing:\n{plain}");
    }
    assert!(!plain.contains("Monitor") && !plain.contains("auth.json"), "toggles are off by default");
    let everything = render("auth-system", &every_toggle());
    assert!(everything.contains("kind: ServiceMonitor") && everything.contains("kind: PodMonitor"));
    assert!(everything.contains("grafana_dashboard: \"1\"") && everything.contains("\"uid\": \"auth-pipeline\""));
    // RBAC grants no delete: the garbage collector removes what a pipeline owned.
    let verbs: Vec<&str> = plain.lines().filter(|line| line.trim_start().starts_with("verbs:")).collect();
    assert!(!verbs.is_empty() && verbs.iter().all(|line| !line.contains("delete")), "{verbs:?}");
}

/// Kubernetes' schemas for 1.35, offline: every object of the rendered chart
/// passes strictly (no unknown field); a mistyped value does not.
#[test]
#[ignore = "needs helm and kubernetes-validate from scripts/services.sh start kube: scripts/test.sh runs it"]
fn the_rendered_chart_passes_kubernetes_schemas_offline() {
    let directory = tempfile::tempdir().expect("temp dir");
    let validate = |name: &str, extra: &[&str]| {
        let mut args = every_toggle();
        args.push("--include-crds");
        args.extend_from_slice(extra);
        let path = directory.path().join(name);
        std::fs::write(&path, render("auth-system", &args)).expect("write the rendered chart");
        let output = Command::new(services_dir().join("kube/kubernetes-validate"))
            .args(["--kubernetes-version", "1.35.0", "--strict"])
            .arg(&path)
            .output()
            .expect("kubernetes-validate is missing: scripts/services.sh start kube installs it");
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), printed)
    };
    let (valid, printed) = validate("chart.yaml", &[]);
    assert!(valid, "{printed}");
    for resource in [
        "customresourcedefinition/utilitypipelines.auth.dev",
        "serviceaccount/auth",
        "configmap/auth-dashboard",
        "clusterrole/auth",
        "clusterrolebinding/auth",
        "role/auth-leader",
        "rolebinding/auth-leader",
        "service/auth-metrics",
        "deployment/auth",
    ] {
        assert!(printed.contains(&format!("passed for resource {resource} ")), "{resource} was not validated:\n{printed}");
    }
    // Only the ServiceMonitor and PodMonitor (prometheus-operator's own CRDs) have no schema here.
    let unchecked: Vec<&str> = printed.lines().filter(|line| line.contains("Couldn't find schema")).collect();
    let monitors = unchecked.iter().filter(|line| line.contains("kind ServiceMonitor") || line.contains("kind PodMonitor")).count();
    assert!(unchecked.len() == 2 && monitors == 2, "{printed}");
    let (valid, printed) = validate("mistyped.yaml", &["--set-string", "replicaCount=two"]);
    let refused = !valid && printed.contains("deployment/auth") && printed.contains("spec.replicas");
    assert!(refused, "replicas: \"two\" must fail validation:\n{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Kubernetes control plane and Kafka: scripts/test.sh runs it"]
async fn the_chart_installs_with_helm_on_the_api_server_and_a_user_sees_the_pipeline() {
    let namespace = format!("chart-{}", fastrand::u32(..));
    run("kubectl", &["create", "namespace", &namespace]);
    // Every toggle: services.sh gives the API server prometheus-operator's monitor CRDs, so they are checked too.
    let chart = render(&namespace, &every_toggle());
    let rendered = std::env::temp_dir().join(format!("{namespace}.yaml"));
    std::fs::write(&rendered, chart).expect("write the rendered chart");
    let file = rendered.to_string_lossy().into_owned();
    run("kubectl", &["apply", "--dry-run=server", "-f", &file]);
    run("kubectl", &["apply", "-f", "charts/auth/crds/"]);
    // Installed as a user installs it; kwok's node runs the operator's pod, so --wait sees it available.
    let release = format!("auth-{}", fastrand::u32(..));
    let mut install = vec!["install", release.as_str(), "charts/auth", "--namespace", namespace.as_str(), "--wait", "--timeout", "90s"];
    install.extend(every_toggle());
    let installed = run("helm", &install);
    assert!(installed.contains("kubectl apply -f charts/auth/examples/pipeline.yaml"), "NOTES say what to apply next:\n{installed}");
    run("kubectl", &["-n", &namespace, "rollout", "status", &format!("deployment/{release}"), "--timeout=60s"]);
    let monitors = run("kubectl", &["-n", &namespace, "get", "servicemonitors,podmonitors", "-o", "name"]);
    assert!(monitors.contains(&format!("servicemonitor.monitoring.coreos.com/{release}")), "{monitors}");
    assert!(monitors.contains(&format!("podmonitor.monitoring.coreos.com/{release}-pipelines")), "{monitors}");

    // The user's path: an operator running, the example applied with kubectl.
    let client = client().await;
    let context = Arc::new(Context::new(client.clone(), "chart-test").watching(Some(namespace.clone())));
    let lease = LeaderLease::new(client, &namespace, "auth-operator", "chart-test", Duration::from_secs(3));
    let (stop, stopped) = watch::channel(false);
    let operator = tokio::spawn(auth_operator::lead(lease, context, stopped));
    run("kubectl", &["-n", &namespace, "apply", "-f", "charts/auth/examples/pipeline.yaml"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let table = loop {
        let table = run("kubectl", &["-n", &namespace, "get", "upl"]);
        if table.contains("False") || table.contains("True") {
            break table;
        }
        assert!(std::time::Instant::now() < deadline, "no Ready column filled in:\n{table}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "REASON", "TOPICS", "STREAM", "REPLICAS", "AGE"], "{table}");
    assert!(table.contains("demo") && table.contains('2'), "{table}");
    // The example names a Kafka of the user's cluster, which this one lacks: the conditions say so.
    let described = run("kubectl", &["-n", &namespace, "describe", "upl", "demo"]);
    assert!(described.contains("Conditions") && described.contains("Topics"), "{described}");
    run("kubectl", &["-n", &namespace, "delete", "upl", "demo", "--timeout=60s"]);
    let _ = stop.send(true);
    operator.await.expect("operator");
    // The chart's cluster-scoped objects (ClusterRole, ClusterRoleBinding) go with the release.
    run("helm", &["uninstall", &release, "--namespace", &namespace]);
    run("kubectl", &["delete", "namespace", &namespace, "--wait=false"]);
    let _ = std::fs::remove_file(&rendered);
}
