#!/usr/bin/env bash
# Starts, stops and reports the real servers AUTH's integration tests use, on
# loopback, idempotently:
#
#   scripts/services.sh up       install what is missing, start, wait until healthy
#   scripts/services.sh down     stop what this script started
#   scripts/services.sh status   say what runs where
#   scripts/services.sh start|stop|restart kafka|redis|mosquitto|postgres|mariadb|s3|kube   one server (tests use it)
#   scripts/services.sh build-deps            Debian packages the build and the tests need (rdkafka: cmake, libcurl;
#                                             browser tests: chromium; `auth bench api`: wrk, redis-tools;
#                                             the monitoring test starts its own prometheus)
#   scripts/services.sh image-deps            Debian packages scripts/image.sh needs (umoci, runc, binutils,
#                                             and the CA certificates and time zones the image carries)
#   scripts/services.sh load-image ARCHIVE    imports an OCI archive into the node's containerd (namespace k8s.io),
#                                             so pods with imagePullPolicy IfNotPresent run it without a registry
#   scripts/services.sh recycle-volumes       wipes the node's volumes whose claim was deleted and offers them again
#
# Servers so far: Apache Kafka (KRaft, one broker-controller, jars from Maven
# Central run with the machine's Java), Redis (Debian's redis-server, AOF on),
# Mosquitto (Debian's, persistent sessions kept whole), PostgreSQL and MariaDB
# (Debian's; user `auth`, password `auth`, may create databases; database
# `auth`) and an S3 server (moto from PyPI in a venv; bucket `auth-test`, any
# credentials), and `kube`: a Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, built with Go from the Kubernetes
# and etcd modules on first use, about 15 minutes on 2 cores) with an admin
# kubeconfig at $AUTH_SERVICES_DIR/kube/kubeconfig and two nodes: kwok plays
# `kwok-node-0`, where pods are scheduled and report Ready without running,
# and `auth-node` runs containers for real (containerd, kubelet, kube-proxy,
# CoreDNS, a CNI bridge and hostPath volumes; see scripts/kube-node.sh; root
# only; about 10 more minutes of building on first use). Settings (environment):
#   AUTH_SERVICES_DIR     state, data and logs      (default ~/.cache/auth/services)
#   AUTH_KAFKA_VERSION    org.apache.kafka:kafka_2.13 version (default 4.4.0)
#   AUTH_KAFKA_PORT       broker port               (default 9092; controller = port + 1)
#   AUTH_REDIS_PORT       Redis port                (default 6379)
#   AUTH_MQTT_PORT        Mosquitto port            (default 1883)
#   AUTH_POSTGRES_PORT    PostgreSQL port           (default 5432)
#   AUTH_MARIADB_PORT     MariaDB port              (default 3306)
#   AUTH_S3_PORT          S3 (moto) port            (default 5000)
#   AUTH_KUBE_VERSION     Kubernetes version        (default 1.35.4; etcd as that release pins it)
#   AUTH_KUBE_PORT        kube-apiserver port       (default 6443; etcd = 2379 and 2380)
# PostgreSQL refuses to run as root; then it runs as the `postgres` user with
# its data under /var/tmp/auth-postgres (root's home is closed to others).
set -euo pipefail

SERVICES_DIR="${AUTH_SERVICES_DIR:-$HOME/.cache/auth/services}"
KAFKA_VERSION="${AUTH_KAFKA_VERSION:-4.4.0}"
LOG4J_VERSION="2.26.1"
SLF4J_VERSION="2.0.20"
KAFKA_PORT="${AUTH_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
REDIS_PORT="${AUTH_REDIS_PORT:-6379}"
MQTT_PORT="${AUTH_MQTT_PORT:-1883}"
POSTGRES_PORT="${AUTH_POSTGRES_PORT:-5432}"
MARIADB_PORT="${AUTH_MARIADB_PORT:-3306}"
S3_PORT="${AUTH_S3_PORT:-5000}"
S3_BUCKET="auth-test"
MOTO_VERSION="5.2.5"
KAFKA_HOME="$HOME/.cache/auth/kafka-$KAFKA_VERSION"
KUBE_VERSION="${AUTH_KUBE_VERSION:-1.35.4}"
KUBE_PORT="${AUTH_KUBE_PORT:-6443}"
KUBE_HOME="$HOME/.cache/auth/kube-$KUBE_VERSION"
ETCD_PORT=2379
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.22.0"
# The ServiceMonitor and PodMonitor CRDs, as a cluster with the Prometheus
# operator has them, so the chart's monitors are applied for real.
PROMETHEUS_OPERATOR_VERSION="v0.85.0"
# Kubernetes' JSON schemas for offline validation of the rendered chart (PyPI).
KUBERNETES_VALIDATE_VERSION="1.35.0"
KUBERNETES_VALIDATE_HOME="$HOME/.cache/auth/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"

say() { printf 'services: %s\n' "$*" >&2; }
# shellcheck source=scripts/kube-node.sh
source "$(dirname "${BASH_SOURCE[0]}")/kube-node.sh"
fail() { say "$*"; exit 1; }

running() { # name -> true when its pid file names a live process
    local pid_file="$SERVICES_DIR/$1.pid"
    [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # seconds, command...: true once the command succeeds
    local seconds=$1
    shift
    for _ in $(seq "$((seconds * 4))"); do
        if "$@"; then return 0; fi
        sleep 0.25
    done
    return 1
}

apt_install() { # package...
    local missing=()
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

install_kafka() {
    [[ -f "$KAFKA_HOME/lib/.complete" ]] && return 0
    rm -rf "$KAFKA_HOME/lib"
    command -v java >/dev/null || fail "Kafka needs Java 17+ (java not found)"
    command -v mvn >/dev/null || fail "fetching Kafka needs Maven (mvn not found)"
    say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_HOME"
    mkdir -p "$KAFKA_HOME"
    cat > "$KAFKA_HOME/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.auth</groupId><artifactId>kafka-server</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
    (cd "$KAFKA_HOME" && mvn -q -B -DoutputDirectory=lib \
        org.apache.maven.plugins:maven-dependency-plugin:3.7.1:copy-dependencies) \
        || fail "could not fetch Kafka $KAFKA_VERSION from Maven Central"
    touch "$KAFKA_HOME/lib/.complete"
}

start_kafka() {
    if running kafka; then say "Kafka already runs on 127.0.0.1:$KAFKA_PORT"; return 0; fi
    port_open "$KAFKA_PORT" && fail "port $KAFKA_PORT is taken by another process (set AUTH_KAFKA_PORT)"
    install_kafka
    local dir="$SERVICES_DIR/kafka" node_listener listeners advertised protocols
    mkdir -p "$dir/data"
    # Pods of the test cluster's node reach Kafka on the bridge's address.
    node_listener=$(kafka_node_listener || true)
    listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT${node_listener:+,$node_listener}"
    advertised="PLAINTEXT://127.0.0.1:$KAFKA_PORT${node_listener:+,$node_listener}"
    protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${node_listener:+,NODE:PLAINTEXT}"
    cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$dir/data
num.partitions=6
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
    cat > "$dir/log4j2.yaml" <<'LOG'
Configuration:
  Appenders:
    Console: { name: STDOUT, PatternLayout: { Pattern: "[%d] %p %m (%c)%n" } }
  Loggers:
    Root: { level: INFO, AppenderRef: [ { ref: STDOUT } ] }
LOG
    local classpath="$KAFKA_HOME/lib/*"
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        local cluster_id
        cluster_id=$(java -cp "$classpath" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
        java -cp "$classpath" -Dlog4j2.configurationFile="$dir/log4j2.yaml" kafka.tools.StorageTool format \
            --standalone -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
            || fail "formatting Kafka storage failed; see $dir/format.log"
    fi
    nohup java -Xmx768m -cp "$classpath" -Dlog4j2.configurationFile="$dir/log4j2.yaml" \
        kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
    echo $! >"$SERVICES_DIR/kafka.pid"
    wait_for 90 grep -q "Kafka Server started" "$dir/kafka.log" \
        || fail "Kafka did not start within 90 s; see $dir/kafka.log"
    say "Kafka $KAFKA_VERSION listens on 127.0.0.1:$KAFKA_PORT${node_listener:+ and, for pods, ${node_listener#NODE://}} (log: $dir/kafka.log)"
}

start_redis() {
    if running redis; then say "Redis already runs on 127.0.0.1:$REDIS_PORT"; return 0; fi
    port_open "$REDIS_PORT" && fail "port $REDIS_PORT is taken by another process (set AUTH_REDIS_PORT)"
    apt_install redis-server
    local dir="$SERVICES_DIR/redis"
    mkdir -p "$dir"
    nohup redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" --appendonly yes \
        --appendfsync always --save "" --daemonize no >"$dir/redis.log" 2>&1 &
    echo $! >"$SERVICES_DIR/redis.pid"
    wait_for 20 sh -c "redis-cli -p $REDIS_PORT ping 2>/dev/null | grep -q PONG" \
        || fail "Redis did not start within 20 s; see $dir/redis.log"
    say "Redis listens on 127.0.0.1:$REDIS_PORT, AOF in $dir (log: $dir/redis.log)"
}

start_mosquitto() {
    if running mosquitto; then say "Mosquitto already runs on 127.0.0.1:$MQTT_PORT"; return 0; fi
    port_open "$MQTT_PORT" && fail "port $MQTT_PORT is taken by another process (set AUTH_MQTT_PORT)"
    apt_install mosquitto
    local dir="$SERVICES_DIR/mosquitto"
    mkdir -p "$dir"
    # Queues of persistent sessions are kept (and saved) whole: a gateway that
    # is away finds every QoS 1 reading when it comes back. Sessions unused
    # for a day (left by tests) expire.
    cat > "$dir/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
user $(id -un)
persistence true
persistence_location $dir/
autosave_interval 10
max_inflight_messages 1000
max_queued_messages 0
max_queued_bytes 0
persistent_client_expiration 1d
log_dest file $dir/mosquitto.log
CONF
    nohup mosquitto -c "$dir/mosquitto.conf" >"$dir/stdout.log" 2>&1 &
    echo $! >"$SERVICES_DIR/mosquitto.pid"
    wait_for 20 port_open "$MQTT_PORT" || fail "Mosquitto did not start within 20 s; see $dir/mosquitto.log"
    say "Mosquitto listens on 127.0.0.1:$MQTT_PORT (log: $dir/mosquitto.log)"
}

start_postgres() {
    if running postgres; then say "PostgreSQL already runs on 127.0.0.1:$POSTGRES_PORT"; return 0; fi
    port_open "$POSTGRES_PORT" && fail "port $POSTGRES_PORT is taken by another process (set AUTH_POSTGRES_PORT)"
    apt_install postgresql
    local bin dir as=()
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    dir="$SERVICES_DIR/postgres"
    if [[ $(id -u) == 0 ]]; then
        dir="/var/tmp/auth-postgres"
        as=(runuser -u postgres --)
    fi
    mkdir -p "$dir"
    [[ $(id -u) == 0 ]] && chown postgres:postgres "$dir"
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
            || fail "initdb failed; see $dir/initdb.log"
    fi
    rm -f "$dir/data/postmaster.pid"
    nohup "${as[@]}" "$bin/postgres" -D "$dir/data" -h 127.0.0.1 -p "$POSTGRES_PORT" -k "$dir" \
        -c fsync=off -c max_connections=200 >"$dir/postgres.log" 2>&1 &
    wait_for 30 "$bin/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT" \
        || fail "PostgreSQL did not start within 30 s; see $dir/postgres.log"
    head -n 1 "$dir/data/postmaster.pid" >"$SERVICES_DIR/postgres.pid"
    local psql=("$bin/psql" -q -h 127.0.0.1 -p "$POSTGRES_PORT" -U postgres -v ON_ERROR_STOP=1)
    if ! "${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'auth'" | grep -q 1; then
        "${psql[@]}" -c "CREATE ROLE auth LOGIN PASSWORD 'auth' CREATEDB"
        "${psql[@]}" -c "CREATE DATABASE auth OWNER auth"
    fi
    say "PostgreSQL listens on 127.0.0.1:$POSTGRES_PORT, data in $dir (log: $dir/postgres.log)"
}

start_mariadb() {
    if running mariadb; then say "MariaDB already runs on 127.0.0.1:$MARIADB_PORT"; return 0; fi
    port_open "$MARIADB_PORT" && fail "port $MARIADB_PORT is taken by another process (set AUTH_MARIADB_PORT)"
    apt_install mariadb-server
    local dir="$SERVICES_DIR/mariadb"
    mkdir -p "$dir"
    if [[ ! -d "$dir/data/mysql" ]]; then
        mariadb-install-db --no-defaults --datadir="$dir/data" --user="$(id -un)" \
            --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
            || fail "mariadb-install-db failed; see $dir/install.log"
    fi
    nohup mariadbd --no-defaults --datadir="$dir/data" --user="$(id -un)" --bind-address=127.0.0.1 \
        --port="$MARIADB_PORT" --socket="$dir/mariadb.sock" --pid-file="$dir/mariadb.pid" \
        --innodb-flush-log-at-trx-commit=2 --skip-name-resolve >"$dir/mariadb.log" 2>&1 &
    echo $! >"$SERVICES_DIR/mariadb.pid"
    wait_for 60 sh -c "mariadb-admin --no-defaults --socket='$dir/mariadb.sock' -uroot ping >/dev/null 2>&1" \
        || fail "MariaDB did not start within 60 s; see $dir/mariadb.log"
    mariadb --no-defaults --socket="$dir/mariadb.sock" -uroot -e "
        CREATE USER IF NOT EXISTS 'auth'@'%' IDENTIFIED BY 'auth';
        GRANT ALL PRIVILEGES ON *.* TO 'auth'@'%';
        CREATE DATABASE IF NOT EXISTS auth;" \
        || fail "creating MariaDB's auth user failed"
    say "MariaDB listens on 127.0.0.1:$MARIADB_PORT (log: $dir/mariadb.log)"
}

start_s3() {
    if running s3; then say "the S3 server already runs on 127.0.0.1:$S3_PORT"; return 0; fi
    port_open "$S3_PORT" && fail "port $S3_PORT is taken by another process (set AUTH_S3_PORT)"
    local venv="$HOME/.cache/auth/moto-$MOTO_VERSION" dir="$SERVICES_DIR/s3"
    if [[ ! -x "$venv/bin/moto_server" ]]; then
        say "installing moto $MOTO_VERSION from PyPI into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "moto[server]==$MOTO_VERSION" || fail "could not install moto from PyPI"
    fi
    mkdir -p "$dir"
    nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$dir/moto.log" 2>&1 &
    echo $! >"$SERVICES_DIR/s3.pid"
    wait_for 30 port_open "$S3_PORT" || fail "the S3 server did not start within 30 s; see $dir/moto.log"
    curl -fsS -X PUT "http://127.0.0.1:$S3_PORT/$S3_BUCKET" >/dev/null \
        || fail "creating bucket $S3_BUCKET failed; see $dir/moto.log"
    say "the S3 server (moto) listens on http://127.0.0.1:$S3_PORT, bucket $S3_BUCKET (log: $dir/moto.log)"
}

# Builds the control plane from the Go module proxy: Kubernetes' own module
# replaces its staging modules with local paths, so a wrapper module pins
# them to their published versions (as controller-runtime's envtest does).
install_kube() {
    [[ -f "$KUBE_HOME/bin/.complete" ]] && return 0
    command -v go >/dev/null || fail "the Kubernetes control plane is built with Go (go not found)"
    command -v openssl >/dev/null || apt_install openssl
    local minor patch
    minor=$(cut -d. -f2 <<<"$KUBE_VERSION")
    patch=$(cut -d. -f3 <<<"$KUBE_VERSION")
    mkdir -p "$KUBE_HOME/kubernetes" "$KUBE_HOME/etcd" "$KUBE_HOME/bin"
    say "building Kubernetes $KUBE_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler) with Go into $KUBE_HOME/bin"
    (
        cd "$KUBE_HOME/kubernetes"
        [[ -f go.mod ]] || go mod init auth-services/kubernetes >/dev/null 2>&1
        go mod download "k8s.io/kubernetes@v$KUBE_VERSION"
        local module
        for module in $(awk '$2 == "=>" && $3 ~ /^\.\/staging/ {print $1}' \
            "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$KUBE_VERSION.mod"); do
            go mod edit -replace="$module=$module@v0.$minor.$patch"
        done
        local commands=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
            k8s.io/kubernetes/cmd/kube-scheduler)
        go get "${commands[@]/%/@v$KUBE_VERSION}" >/dev/null 2>&1
        go build -o "$KUBE_HOME/bin/" -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION \
            -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" "${commands[@]}"
    ) || fail "building Kubernetes $KUBE_VERSION failed"
    local etcd_version
    etcd_version=$(awk '$1 == "go.etcd.io/etcd/client/v3" {print $2}' \
        "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$KUBE_VERSION.mod")
    say "building etcd $etcd_version with Go"
    (
        cd "$KUBE_HOME/etcd"
        [[ -f go.mod ]] || go mod init auth-services/etcd >/dev/null 2>&1
        go get "go.etcd.io/etcd/server/v3@$etcd_version" >/dev/null 2>&1
        go build -o "$KUBE_HOME/bin/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3
    ) || fail "building etcd $etcd_version failed"
    touch "$KUBE_HOME/bin/.complete"
}

install_kwok() {
    [[ -x "$KUBE_HOME/bin/kwok-$KWOK_VERSION" ]] && return 0
    say "building kwok $KWOK_VERSION with Go (it plays the nodes: pods report Running and Ready)"
    local gobin="$KUBE_HOME/kwok-$KWOK_VERSION"
    GOBIN="$gobin" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" || fail "building kwok $KWOK_VERSION failed"
    # Its "fast" stages (nodes initialize and heartbeat through a Lease, pods
    # become Ready at once, complete and go) ship as YAML in the module.
    local stages
    stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
    for file in "$stages"/node/fast/node-initialize.yaml "$stages"/node/heartbeat-with-lease/*.yaml "$stages"/pod/fast/*.yaml; do
        printf -- '---\n'
        cat "$file"
    done >"$KUBE_HOME/bin/kwok-$KWOK_VERSION-stages.yaml"
    mv "$gobin/kwok" "$KUBE_HOME/bin/kwok-$KWOK_VERSION"
}

install_monitor_crds() {
    local crds="$KUBE_HOME/bin/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION-monitors.yaml"
    [[ -f "$crds" ]] && return 0
    say "fetching the ServiceMonitor and PodMonitor CRDs of prometheus-operator $PROMETHEUS_OPERATOR_VERSION (Go module proxy)"
    local module
    module=$(cd "$KUBE_HOME" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') || fail "downloading prometheus-operator failed"
    cat "$module/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
        "$module/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml" >"$crds.tmp"
    mv "$crds.tmp" "$crds"
}

# The API server's serving certificate: for 127.0.0.1, and for pods, which
# reach it as the Service `kubernetes` (10.0.0.1, the first address of
# --service-cluster-ip-range) or on the node's bridge address. Made again
# when the names it must carry change.
kube_serving_certificate() { # dir
    local dir=$1 names
    names="subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:$NODE_ADDRESS,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default"
    names+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    [[ -f "$dir/apiserver.crt" && "$(cat "$dir/apiserver.ext" 2>/dev/null)" == "$names" ]] && return 0
    [[ -f "$dir/apiserver.key" ]] || openssl genrsa -out "$dir/apiserver.key" 2048 2>/dev/null
    openssl req -new -key "$dir/apiserver.key" -subj "/CN=kube-apiserver" -out "$dir/apiserver.csr" 2>/dev/null
    printf '%s\n' "$names" >"$dir/apiserver.ext"
    openssl x509 -req -in "$dir/apiserver.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 3650 \
        -extfile "$dir/apiserver.ext" -out "$dir/apiserver.crt" 2>/dev/null
}

# Keys and certificates: a CA, the API server's serving certificate, the
# service-account signing key and an admin bearer token.
kube_credentials() { # dir
    local dir=$1
    if [[ -f "$dir/kubeconfig" ]]; then kube_serving_certificate "$dir"; return 0; fi
    openssl genrsa -out "$dir/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=auth-services-ca" -days 3650 -out "$dir/ca.crt" 2>/dev/null
    kube_serving_certificate "$dir"
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
    local token
    token=$(openssl rand -hex 24)
    printf '%s,admin,1,"system:masters"\n' "$token" >"$dir/tokens.csv"
    cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: auth-services
  cluster:
    server: https://127.0.0.1:$KUBE_PORT
    certificate-authority: $dir/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: auth-services
  context: {cluster: auth-services, user: admin, namespace: default}
current-context: auth-services
KUBECONFIG
}

kwok_node_ready() { # dir token
    curl -fsS --cacert "$1/ca.crt" -H "Authorization: Bearer $2" "https://127.0.0.1:$KUBE_PORT/api/v1/nodes/kwok-node-0" 2>/dev/null \
        | python3 -c 'import json, sys
conditions = json.load(sys.stdin).get("status", {}).get("conditions", [])
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else 1)'
}

# The clients tests drive the control plane with: kubectl (Debian's
# kubernetes-client) and helm (built with Go); and kubernetes-validate (PyPI,
# in a venv), which checks manifests against Kubernetes' schemas offline.
install_kube_clients() {
    command -v kubectl >/dev/null || apt_install kubernetes-client
    if [[ ! -x "$KUBERNETES_VALIDATE_HOME/bin/kubernetes-validate" ]]; then
        say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI into $KUBERNETES_VALIDATE_HOME"
        python3 -m venv "$KUBERNETES_VALIDATE_HOME"
        "$KUBERNETES_VALIDATE_HOME/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
            || fail "could not install kubernetes-validate from PyPI"
    fi
    [[ -x "$KUBE_HOME/bin/helm-$HELM_VERSION" ]] && return 0
    say "building helm $HELM_VERSION with Go"
    local gobin="$KUBE_HOME/helm-$HELM_VERSION"
    GOBIN="$gobin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || fail "building helm $HELM_VERSION failed"
    mv "$gobin/helm" "$KUBE_HOME/bin/helm-$HELM_VERSION"
}

start_kube() {
    if running kube-apiserver; then
        say "the Kubernetes API server already runs on https://127.0.0.1:$KUBE_PORT"
        start_node
        return 0
    fi
    port_open "$KUBE_PORT" && fail "port $KUBE_PORT is taken by another process (set AUTH_KUBE_PORT)"
    port_open "$ETCD_PORT" && fail "port $ETCD_PORT (etcd) is taken by another process"
    install_kube
    install_kwok
    install_kube_clients
    install_monitor_crds
    local dir="$SERVICES_DIR/kube" bin="$KUBE_HOME/bin"
    mkdir -p "$dir"
    kube_credentials "$dir"
    # The test cluster starts empty, as the tests' Redis does: what earlier
    # runs left (a failed test's namespace, kept for inspection until now; a
    # pipeline whose operator was the test process) has nothing behind it,
    # and the controllers would work on it for good (CI found 100 namespaces
    # stuck Terminating and a killed end-to-end test's pods still running).
    # The node's volumes go with the claims that held them.
    rm -rf "$dir/etcd" "$SERVICES_DIR/node/volumes"
    nohup "$bin/etcd" --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
        --unsafe-no-fsync >"$dir/etcd.log" 2>&1 &
    echo $! >"$SERVICES_DIR/etcd.pid"
    wait_for 30 port_open "$ETCD_PORT" || fail "etcd did not start within 30 s; see $dir/etcd.log"
    # Pods reach the API server through the Service `kubernetes`, whose
    # endpoint is the advertised address: the node's bridge address, relayed
    # to 127.0.0.1 (scripts/kube-node.sh), when this machine has the bridge.
    local advertise=127.0.0.1
    node_network 2>/dev/null && advertise=$NODE_ADDRESS
    nohup "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" --bind-address 127.0.0.1 \
        --advertise-address "$advertise" --secure-port "$KUBE_PORT" --tls-cert-file "$dir/apiserver.crt" \
        --tls-private-key-file "$dir/apiserver.key" --client-ca-file "$dir/ca.crt" --token-auth-file "$dir/tokens.csv" \
        --authorization-mode RBAC --service-cluster-ip-range 10.0.0.0/24 --kubelet-preferred-address-types InternalIP \
        --service-account-issuer "https://127.0.0.1:$KUBE_PORT" --service-account-key-file "$dir/sa.pub" \
        --service-account-signing-key-file "$dir/sa.key" --cert-dir "$dir/certs" >"$dir/kube-apiserver.log" 2>&1 &
    echo $! >"$SERVICES_DIR/kube-apiserver.pid"
    local token
    token=$(cut -d, -f1 "$dir/tokens.csv")
    wait_for 90 sh -c "curl -fsS --cacert '$dir/ca.crt' -H 'Authorization: Bearer $token' \
        https://127.0.0.1:$KUBE_PORT/readyz >/dev/null 2>&1" \
        || fail "kube-apiserver was not ready within 90 s; see $dir/kube-apiserver.log"
    # kwok renews its node's status too rarely for the node lifecycle
    # controller's default grace period (50 s): the node flipped NotReady
    # about once a minute and took every pod's Ready with it (the cause of
    # the operator test's "Ready true" timeouts). The fake node never fails.
    nohup "$bin/kube-controller-manager" --kubeconfig "$dir/kubeconfig" --bind-address 127.0.0.1 --secure-port 10257 \
        --service-account-private-key-file "$dir/sa.key" --root-ca-file "$dir/ca.crt" --leader-elect=false \
        --cluster-signing-cert-file "$dir/ca.crt" --cluster-signing-key-file "$dir/ca.key" \
        --node-monitor-grace-period=1h \
        >"$dir/kube-controller-manager.log" 2>&1 &
    echo $! >"$SERVICES_DIR/kube-controller-manager.pid"
    nohup "$bin/kube-scheduler" --kubeconfig "$dir/kubeconfig" --bind-address 127.0.0.1 --secure-port 10259 \
        --leader-elect=false >"$dir/kube-scheduler.log" 2>&1 &
    echo $! >"$SERVICES_DIR/kube-scheduler.pid"
    wait_for 60 sh -c "curl -fsS -k https://127.0.0.1:10257/healthz >/dev/null 2>&1" \
        || fail "kube-controller-manager was not healthy within 60 s; see $dir/kube-controller-manager.log"
    nohup "$bin/kwok-$KWOK_VERSION" --kubeconfig "$dir/kubeconfig" --config "$bin/kwok-$KWOK_VERSION-stages.yaml" \
        --manage-nodes-with-label-selector type=kwok --cidr 10.1.0.0/16 \
        --server-address 127.0.0.1:10247 >"$dir/kwok.log" 2>&1 &
    echo $! >"$SERVICES_DIR/kwok.pid"
    local node='{"apiVersion":"v1","kind":"Node","metadata":{"name":"kwok-node-0","labels":{"type":"kwok"}},'
    node+='"status":{"allocatable":{"cpu":"64","memory":"256Gi","pods":"250"},"capacity":{"cpu":"64","memory":"256Gi","pods":"250"}}}'
    curl -fsS --cacert "$dir/ca.crt" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -X POST -d "$node" "https://127.0.0.1:$KUBE_PORT/api/v1/nodes" >/dev/null 2>&1 || true
    wait_for 60 kwok_node_ready "$dir" "$token" || fail "kwok did not make node kwok-node-0 Ready within 60 s; see $dir/kwok.log"
    kubectl --kubeconfig "$dir/kubeconfig" apply --server-side --force-conflicts \
        -f "$bin/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION-monitors.yaml" >/dev/null \
        || fail "applying the ServiceMonitor and PodMonitor CRDs failed"
    ln -sf "$bin/helm-$HELM_VERSION" "$dir/helm"
    ln -sf "$KUBERNETES_VALIDATE_HOME/bin/kubernetes-validate" "$dir/kubernetes-validate"
    start_node
    say "Kubernetes $KUBE_VERSION API server listens on https://127.0.0.1:$KUBE_PORT (kubeconfig: $dir/kubeconfig; helm and kubernetes-validate: $dir; logs in $dir)"
}

stop_kube() {
    stop_node; stop kwok; stop kube-scheduler; stop kube-controller-manager; stop kube-apiserver; stop etcd
}

stop() { # name
    if running "$1"; then
        local pid
        pid=$(cat "$SERVICES_DIR/$1.pid")
        kill "$pid"
        wait_for 30 sh -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid"
        say "$1 stopped"
    fi
    rm -f "$SERVICES_DIR/$1.pid"
}

status() {
    local name
    for name in kafka redis mosquitto postgres mariadb s3 kube-apiserver kubelet; do
        if running "$name"; then say "$name runs (pid $(cat "$SERVICES_DIR/$name.pid"))"; else say "$name is not running"; fi
    done
    say "Kafka 127.0.0.1:$KAFKA_PORT  Redis 127.0.0.1:$REDIS_PORT  Mosquitto 127.0.0.1:$MQTT_PORT  state in $SERVICES_DIR"
    say "PostgreSQL 127.0.0.1:$POSTGRES_PORT  MariaDB 127.0.0.1:$MARIADB_PORT  S3 http://127.0.0.1:$S3_PORT"
    say "Kubernetes https://127.0.0.1:$KUBE_PORT (kubeconfig $SERVICES_DIR/kube/kubeconfig)"
}

mkdir -p "$SERVICES_DIR"
case "${1:-}" in
    up) start_redis; start_mosquitto; start_postgres; start_mariadb; start_s3; start_kafka; start_kube ;;
    down) stop_kube; stop kafka; stop s3; stop mariadb; stop postgres; stop mosquitto; stop redis ;;
    status) status ;;
    stop)
        case "${2:-}" in
            kafka|redis|mosquitto|postgres|mariadb|s3) stop "$2" ;;
            kube) stop_kube ;;
            *) fail "usage: $0 stop kafka|redis|mosquitto|postgres|mariadb|s3|kube" ;;
        esac ;;
    start)
        case "${2:-}" in
            kafka) start_kafka ;;
            redis) start_redis ;;
            mosquitto) start_mosquitto ;;
            postgres) start_postgres ;;
            mariadb) start_mariadb ;;
            s3) start_s3 ;;
            kube) start_kube ;;
            *) fail "usage: $0 start kafka|redis|mosquitto|postgres|mariadb|s3|kube" ;;
        esac ;;
    restart)
        case "${2:-}" in
            kafka) stop kafka; start_kafka ;;
            redis) stop redis; start_redis ;;
            mosquitto) stop mosquitto; start_mosquitto ;;
            postgres) stop postgres; start_postgres ;;
            mariadb) stop mariadb; start_mariadb ;;
            s3) stop s3; start_s3 ;;
            kube) stop_kube; start_kube ;;
            *) fail "usage: $0 restart kafka|redis|mosquitto|postgres|mariadb|s3|kube" ;;
        esac ;;
    build-deps) apt_install cmake libcurl4-openssl-dev chromium wrk redis-tools prometheus ;;
    image-deps) apt_install umoci runc ca-certificates tzdata binutils ;;
    load-image)
        [[ -f "${2:-}" ]] || fail "usage: $0 load-image ARCHIVE (an OCI archive, e.g. from scripts/image.sh)"
        running containerd || fail "the node's containerd is not running (scripts/services.sh start kube)"
        node_ctr images import "$2" || fail "importing $2 into the node's containerd failed" ;;
    recycle-volumes)
        running kubelet || fail "the node is not running (scripts/services.sh start kube)"
        node_volumes "$SERVICES_DIR/kube/kubeconfig" ;;
    *) fail "usage: $0 up|down|status|start|stop|restart kafka|redis|mosquitto|postgres|mariadb|s3|kube|build-deps|image-deps|load-image|recycle-volumes" ;;
esac
