# A Kubernetes node whose containers really run, beside kwok's fake one.
# Sourced by scripts/services.sh (it uses its settings and helpers); started
# by `scripts/services.sh start kube` after the control plane.
#
# - containerd 2.x and its runc shim, built with Go from containerd's module,
#   running Debian's runc; a pause image built from Kubernetes' pause.c.
# - kubelet and kube-proxy (iptables mode) built from the Kubernetes module
#   the control plane comes from; node `auth-node`, cgroupfs driver, and
#   `failCgroupV1: false` (this kernel mounts cgroup v1). The node is tainted
#   `auth.dev/node=real:NoSchedule` and labelled `auth.dev/node=real`, so only
#   pods that ask for it land there (kwok's node keeps the other tests' pods).
# - Pods get addresses of 10.88.0.0/24 on the bridge `auth-cni0` (Debian's CNI
#   plugins: bridge, host-local, loopback, portmap). The bridge has no uplink
#   and forwards nothing off it, and nothing is masqueraded: a pod reaches only
#   this machine's bridge address 10.88.0.1 and the cluster's pods.
# - On 10.88.0.1 the servers of this script are reachable from pods: Kafka on
#   its own listener (port AUTH_KAFKA_PORT + 2, advertised as 10.88.0.1) and
#   the others through socat relays on their usual ports; the API server too,
#   which advertises 10.88.0.1, so in-cluster clients (the operator's pod)
#   reach it as the Service `kubernetes`.
# - Images without a registry: the pause image (from Kubernetes' pause.c) and
#   auth.local/redis:7.0 (Debian's redis-server) are imported at every start;
#   `scripts/services.sh load-image ARCHIVE` imports others (scripts/image.sh's).
# - CoreDNS (built with Go) serves cluster.local on 10.88.0.1:53, the node's
#   cluster DNS; it resolves nothing else (no forwarding off the machine).
# - PersistentVolumes: the StorageClass `auth-local` (the default) with
#   hostPath volumes under $SERVICES_DIR/node/volumes, bound on first use;
#   a volume whose claim was deleted is wiped and offered again at every
#   start and by `scripts/services.sh recycle-volumes`.

NODE_NAME="auth-node"
NODE_BRIDGE="auth-cni0"
NODE_ADDRESS="10.88.0.1"
NODE_POD_CIDR="10.88.0.0/24"
NODE_KAFKA_PORT=$((KAFKA_PORT + 2))
NODE_VOLUMES=12
CONTAINERD_VERSION="v2.4.2"
COREDNS_VERSION="v1.14.7"
PAUSE_IMAGE="auth.local/pause:$KUBE_VERSION"
# The managed Redis of pipelines on this node (kubernetes.redis.image).
REDIS_IMAGE="auth.local/redis:7.0"

# The bridge the pods' network lives on; the host side carries NODE_ADDRESS.
# Needs root (ip, sysctl, iptables); false without it.
node_network() {
    [[ $(id -u) == 0 ]] || return 1
    apt_install iproute2 iptables >&2
    ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge || return 1
    ip -4 addr show dev "$NODE_BRIDGE" | grep -q "inet $NODE_ADDRESS/" \
        || ip addr add "$NODE_ADDRESS/24" dev "$NODE_BRIDGE" || return 1
    ip link set "$NODE_BRIDGE" up
    # Service addresses are translated by iptables for bridged pod traffic
    # too, and pods' traffic is forwarded only within the bridge.
    modprobe br_netfilter 2>/dev/null || true
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
    echo 1 >/proc/sys/net/ipv4/ip_forward
    iptables -C FORWARD -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -j DROP 2>/dev/null \
        || iptables -I FORWARD -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -j DROP
    iptables -C FORWARD -o "$NODE_BRIDGE" ! -i "$NODE_BRIDGE" -j DROP 2>/dev/null \
        || iptables -I FORWARD -o "$NODE_BRIDGE" ! -i "$NODE_BRIDGE" -j DROP
}

# Kafka's extra listener for pods, when the bridge is there.
kafka_node_listener() {
    node_network 2>/dev/null && echo "NODE://$NODE_ADDRESS:$NODE_KAFKA_PORT"
}

go_build_module() { # dir version output tags package...: builds the packages of one module at one version
    local dir=$1 version=$2 output=$3 tags=$4
    shift 4
    mkdir -p "$dir"
    (
        cd "$dir"
        [[ -f go.mod ]] || go mod init "auth-services/$(basename "$dir")" >/dev/null 2>&1
        go get "${@/%/@$version}"
        go build -o "$output" -tags "$tags" -ldflags "-s -w" "$@"
    )
}

install_node() {
    [[ -f "$KUBE_HOME/bin/.node-complete" ]] && return 0
    apt_install umoci libc6-dev gcc
    local minor
    minor=$(cut -d. -f2 <<<"$KUBE_VERSION")
    if [[ ! -x "$KUBE_HOME/bin/kubelet" || ! -x "$KUBE_HOME/bin/kube-proxy" ]]; then
        say "building kubelet and kube-proxy $KUBE_VERSION with Go into $KUBE_HOME/bin"
        (
            cd "$KUBE_HOME/kubernetes"
            local commands=(k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
            go get "${commands[@]/%/@v$KUBE_VERSION}" >/dev/null 2>&1
            go build -o "$KUBE_HOME/bin/" -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION \
                -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" "${commands[@]}"
        ) || fail "building kubelet and kube-proxy failed"
    fi
    if [[ ! -x "$KUBE_HOME/bin/containerd" ]]; then
        say "building containerd $CONTAINERD_VERSION and its runc shim with Go"
        go_build_module "$KUBE_HOME/containerd" "$CONTAINERD_VERSION" "$KUBE_HOME/bin/" \
            "no_btrfs no_devmapper no_zfs" github.com/containerd/containerd/v2/cmd/containerd \
            github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/ctr \
            || fail "building containerd $CONTAINERD_VERSION failed"
    fi
    if [[ ! -x "$KUBE_HOME/bin/coredns" ]]; then
        say "building CoreDNS $COREDNS_VERSION with Go"
        go_build_module "$KUBE_HOME/coredns" "$COREDNS_VERSION" "$KUBE_HOME/bin/coredns" "" \
            github.com/coredns/coredns || fail "building CoreDNS $COREDNS_VERSION failed"
    fi
    build_pause_image
    touch "$KUBE_HOME/bin/.node-complete"
}

# An OCI archive of the files under rootfs, named for containerd's import.
pack_image() { # rootfs name user archive entrypoint...
    local rootfs=$1 name=$2 user=$3 archive=$4 work argument
    shift 4
    work=$(mktemp -d)
    umoci init --layout "$work/layout"
    umoci new --image "$work/layout:image"
    umoci unpack --image "$work/layout:image" "$work/bundle" >/dev/null
    cp -a "$rootfs/." "$work/bundle/rootfs/"
    umoci repack --image "$work/layout:image" "$work/bundle"
    local entrypoint=()
    for argument in "$@"; do entrypoint+=(--config.entrypoint "$argument"); done
    umoci config --image "$work/layout:image" "${entrypoint[@]}" --config.user "$user"
    umoci gc --layout "$work/layout"
    python3 "$(dirname "${BASH_SOURCE[0]}")/name-oci-layout.py" "$work/layout" "$name"
    tar -C "$work/layout" -cf "$archive" .
    rm -rf "$work"
}

# The sandbox image every pod starts with, from Kubernetes' own pause.c
# (no registry to pull registry.k8s.io/pause from).
build_pause_image() {
    local source rootfs
    source="$(go env GOMODCACHE)/k8s.io/kubernetes@v$KUBE_VERSION/build/pause/linux/pause.c"
    [[ -f "$source" ]] || fail "pause.c is not in the Kubernetes module ($source)"
    rootfs=$(mktemp -d)
    gcc -Os -static -DVERSION="v$KUBE_VERSION" -o "$rootfs/pause" "$source" || fail "compiling pause.c failed"
    strip "$rootfs/pause"
    pack_image "$rootfs" "$PAUSE_IMAGE" 65535:65535 "$KUBE_HOME/bin/pause.oci.tar" /pause
    rm -rf "$rootfs"
}

# A Redis image from Debian's redis-server and the libraries it links, for
# the operator's managed Redis (no registry to pull redis from); user 999 as
# in the official image.
build_redis_image() {
    local rootfs library
    apt_install redis-server
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs/usr/bin" "$rootfs/etc" "$rootfs/data" "$rootfs/tmp"
    cp /usr/bin/redis-server "$rootfs/usr/bin/"
    while read -r library; do
        mkdir -p "$rootfs$(dirname "$library")"
        cp -L "$library" "$rootfs$library"
    done < <(ldd /usr/bin/redis-server | awk '/=> \// { print $3 } /^\s*\/.*ld-linux/ { print $1 }' | sort -u)
    printf 'root:x:0:0:root:/:/usr/sbin/nologin\nredis:x:999:999:redis:/data:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nredis:x:999:\n' >"$rootfs/etc/group"
    chown 999:999 "$rootfs/data"
    pack_image "$rootfs" "$REDIS_IMAGE" 999:999 "$KUBE_HOME/bin/redis.oci.tar" /usr/bin/redis-server
    rm -rf "$rootfs"
}

node_ctr() { "$KUBE_HOME/bin/ctr" --address "$SERVICES_DIR/node/containerd/containerd.sock" -n k8s.io "$@"; }

start_containerd() {
    local dir="$SERVICES_DIR/node"
    mkdir -p "$dir/containerd" "$dir/cni"
    cat >"$dir/containerd.toml" <<TOML
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"
# This machine withholds CAP_SYS_RESOURCE even from root, so no process may
# lower its OOM score below containerd's: the kubelet's -998 for sandboxes
# made runc fail ("failed to update /proc/self/oom_score_adj").
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$dir/cni"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "$(command -v runc)"
      SystemdCgroup = false
TOML
    cat >"$dir/cni/10-auth.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "auth",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_ADDRESS"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$dir/cni-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
CNI
    PATH="$KUBE_HOME/bin:$PATH" nohup "$KUBE_HOME/bin/containerd" --config "$dir/containerd.toml" \
        >"$dir/containerd.log" 2>&1 &
    echo $! >"$SERVICES_DIR/containerd.pid"
    wait_for 30 node_ctr version >/dev/null 2>&1 || fail "containerd did not start within 30 s; see $dir/containerd.log"
    [[ -f "$KUBE_HOME/bin/redis.oci.tar" ]] || build_redis_image
    local image
    for image in pause redis; do
        node_ctr images import "$KUBE_HOME/bin/$image.oci.tar" >/dev/null || fail "importing the $image image failed"
    done
}

node_ready() { # kubeconfig
    kubectl --kubeconfig "$1" get node "$NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True
}

start_node() {
    if running kubelet; then say "the node $NODE_NAME already runs"; return 0; fi
    apt_install containernetworking-plugins iptables conntrack socat runc
    node_network || fail "the node's bridge $NODE_BRIDGE needs root (ip, iptables)"
    install_node
    local dir="$SERVICES_DIR/node" kube="$SERVICES_DIR/kube" bin="$KUBE_HOME/bin"
    mkdir -p "$dir/kubelet" "$dir/volumes"
    start_containerd
    cat >"$dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
# The API server reaches the kubelet (logs, exec) on the node's address; only
# this machine can.
address: $NODE_ADDRESS
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$NODE_ADDRESS]
podCIDR: $NODE_POD_CIDR
maxPods: 60
# Absolute thresholds: this machine's disk is shared with build caches, so a
# share of it says nothing about the node (at 2% the node went into disk
# pressure and refused every pod while 5 GB were free).
evictionHard: {memory.available: 100Mi, nodefs.available: 512Mi, imagefs.available: 512Mi}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerWithTaints: [{key: auth.dev/node, value: real, effect: NoSchedule}]
YAML
    nohup "$bin/kubelet" --config "$dir/kubelet.yaml" --kubeconfig "$kube/kubeconfig" --hostname-override "$NODE_NAME" \
        --node-ip "$NODE_ADDRESS" --node-labels auth.dev/node=real --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet-pki" \
        >"$dir/kubelet.log" 2>&1 &
    echo $! >"$SERVICES_DIR/kubelet.pid"
    nohup "$bin/kube-proxy" --kubeconfig "$kube/kubeconfig" --hostname-override "$NODE_NAME" --proxy-mode iptables \
        --cluster-cidr "$NODE_POD_CIDR" --bind-address 127.0.0.1 --metrics-bind-address 127.0.0.1:10249 \
        --healthz-bind-address 127.0.0.1:10256 --conntrack-max-per-core 0 >"$dir/kube-proxy.log" 2>&1 &
    echo $! >"$SERVICES_DIR/kube-proxy.pid"
    cat >"$dir/Corefile" <<COREFILE
cluster.local:53 in-addr.arpa:53 {
    bind $NODE_ADDRESS
    kubernetes cluster.local in-addr.arpa {
        kubeconfig $kube/kubeconfig
    }
    errors
}
.:53 {
    bind $NODE_ADDRESS
    errors
}
COREFILE
    nohup "$bin/coredns" -conf "$dir/Corefile" >"$dir/coredns.log" 2>&1 &
    echo $! >"$SERVICES_DIR/coredns.pid"
    start_relays
    wait_for 120 node_ready "$kube/kubeconfig" || fail "node $NODE_NAME was not Ready within 120 s; see $dir/kubelet.log"
    node_volumes "$kube/kubeconfig"
    say "node $NODE_NAME runs containers (containerd $CONTAINERD_VERSION, pods on $NODE_POD_CIDR, DNS $NODE_ADDRESS; logs in $dir)"
}

# Pods reach the servers on the bridge address; Kafka has a listener there.
start_relays() {
    local name port
    for name in kube:$KUBE_PORT redis:$REDIS_PORT postgres:$POSTGRES_PORT mariadb:$MARIADB_PORT s3:$S3_PORT mosquitto:$MQTT_PORT; do
        port=${name#*:}
        running "relay-${name%%:*}" && continue
        nohup socat "TCP-LISTEN:$port,bind=$NODE_ADDRESS,fork,reuseaddr" "TCP:127.0.0.1:$port" \
            >"$SERVICES_DIR/node/relay-${name%%:*}.log" 2>&1 &
        echo $! >"$SERVICES_DIR/relay-${name%%:*}.pid"
    done
}

# A default StorageClass and hostPath PersistentVolumes it binds on first use.
node_volumes() { # kubeconfig
    local manifest i
    manifest='apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: auth-local, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain'
    for i in $(seq 0 $((NODE_VOLUMES - 1))); do
        mkdir -p "$SERVICES_DIR/node/volumes/pv-$i"
        chmod 0777 "$SERVICES_DIR/node/volumes/pv-$i"
        manifest+="
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: auth-node-pv-$i, labels: {auth.dev/node-volume: 'true'}}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: auth-local
  hostPath: {path: $SERVICES_DIR/node/volumes/pv-$i, type: Directory}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}]}]"
    done
    kubectl --kubeconfig "$1" apply --server-side -f - <<<"$manifest" >/dev/null || fail "creating the node's volumes failed"
    recycle_volumes "$1"
}

# The node's volumes whose claim is gone (phase Released): their files are
# deleted and the volume is Available again (what the deprecated Recycle
# reclaim policy did, without its recycler pod's image).
recycle_volumes() { # kubeconfig
    local volume released
    released=$(kubectl --kubeconfig "$1" get pv -l auth.dev/node-volume=true \
        -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{"\n"}{end}') \
        || fail "listing the node's volumes failed"
    for volume in $released; do
        find "$SERVICES_DIR/node/volumes/${volume#auth-node-}" -mindepth 1 -delete
        kubectl --kubeconfig "$1" patch pv "$volume" --type json -p '[{"op": "remove", "path": "/spec/claimRef"}]' >/dev/null \
            || fail "offering the volume $volume again failed"
        say "volume $volume wiped and Available again"
    done
}

stop_node() {
    local name
    for name in relay-kube relay-redis relay-postgres relay-mariadb relay-s3 relay-mosquitto coredns kube-proxy kubelet; do
        stop "$name"
    done
    if running containerd; then
        # Pods' containers outlive the kubelet; stop them with containerd.
        local task
        for task in $(node_ctr tasks ls -q 2>/dev/null); do node_ctr tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true; done
    fi
    stop containerd
}
