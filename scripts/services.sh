#!/usr/bin/env bash
# Starts, stops and reports the real servers AUTH's integration tests use, on
# loopback, idempotently:
#
#   scripts/services.sh up       install what is missing, start, wait until healthy
#   scripts/services.sh down     stop what this script started
#   scripts/services.sh status   say what runs where
#   scripts/services.sh start|stop|restart kafka|redis|mosquitto   one server (tests use it)
#   scripts/services.sh build-deps            Debian packages the Rust build needs (rdkafka: cmake, libcurl)
#
# Servers so far: Apache Kafka (KRaft, one broker-controller, jars from Maven
# Central run with the machine's Java), Redis (Debian's redis-server, AOF on)
# and Mosquitto (Debian's, persistent sessions kept whole).
# Later issues add theirs here. Settings (environment):
#   AUTH_SERVICES_DIR     state, data and logs      (default ~/.cache/auth/services)
#   AUTH_KAFKA_VERSION    org.apache.kafka:kafka_2.13 version (default 4.4.0)
#   AUTH_KAFKA_PORT       broker port               (default 9092; controller = port + 1)
#   AUTH_REDIS_PORT       Redis port                (default 6379)
#   AUTH_MQTT_PORT        Mosquitto port            (default 1883)
set -euo pipefail

SERVICES_DIR="${AUTH_SERVICES_DIR:-$HOME/.cache/auth/services}"
KAFKA_VERSION="${AUTH_KAFKA_VERSION:-4.4.0}"
LOG4J_VERSION="2.26.1"
SLF4J_VERSION="2.0.20"
KAFKA_PORT="${AUTH_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
REDIS_PORT="${AUTH_REDIS_PORT:-6379}"
MQTT_PORT="${AUTH_MQTT_PORT:-1883}"
KAFKA_HOME="$HOME/.cache/auth/kafka-$KAFKA_VERSION"

say() { printf 'services: %s\n' "$*" >&2; }
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
    local dir="$SERVICES_DIR/kafka"
    mkdir -p "$dir/data"
    cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
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
    say "Kafka $KAFKA_VERSION listens on 127.0.0.1:$KAFKA_PORT (log: $dir/kafka.log)"
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
    for name in kafka redis mosquitto; do
        if running "$name"; then say "$name runs (pid $(cat "$SERVICES_DIR/$name.pid"))"; else say "$name is not running"; fi
    done
    say "Kafka 127.0.0.1:$KAFKA_PORT  Redis 127.0.0.1:$REDIS_PORT  Mosquitto 127.0.0.1:$MQTT_PORT  state in $SERVICES_DIR"
}

mkdir -p "$SERVICES_DIR"
case "${1:-}" in
    up) start_redis; start_mosquitto; start_kafka ;;
    down) stop kafka; stop mosquitto; stop redis ;;
    status) status ;;
    stop)
        case "${2:-}" in
            kafka|redis|mosquitto) stop "$2" ;;
            *) fail "usage: $0 stop kafka|redis|mosquitto" ;;
        esac ;;
    start)
        case "${2:-}" in
            kafka) start_kafka ;;
            redis) start_redis ;;
            mosquitto) start_mosquitto ;;
            *) fail "usage: $0 start kafka|redis|mosquitto" ;;
        esac ;;
    restart)
        case "${2:-}" in
            kafka) stop kafka; start_kafka ;;
            redis) stop redis; start_redis ;;
            mosquitto) stop mosquitto; start_mosquitto ;;
            *) fail "usage: $0 restart kafka|redis|mosquitto" ;;
        esac ;;
    build-deps) apt_install cmake libcurl4-openssl-dev ;;
    *) fail "usage: $0 up|down|status|start|stop|restart kafka|redis|mosquitto|build-deps" ;;
esac
