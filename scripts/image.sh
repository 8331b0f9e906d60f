#!/usr/bin/env bash
# Builds the OCI image of the `auth` binary without a Docker engine or a base
# image: the release binary (stripped; its debug info split off next to the
# archive), exactly the shared libraries it links (as `ldd` resolves them on
# this Debian), Debian's CA certificates and time zones, and a non-root user.
# Layers and manifests are made by umoci (Debian's package); the result is an
# OCI archive that `ctr images import`, `podman load` and `skopeo copy
# oci-archive:...` accept. Then the image runs `auth --version` in a runc
# container of its own (its filesystem holds everything the binary needs) and
# the script reports the image's compressed size against the 60 MB budget.
#
#   scripts/image.sh                 # -> <target dir>/image/auth-<appVersion>.oci.tar
#   AUTH_IMAGE_NAME=registry.example/auth scripts/image.sh
#   AUTH_IMAGE_BINARY=path/to/auth scripts/image.sh   # pack a binary built elsewhere
#
# The tag is the chart's appVersion (charts/auth/Chart.yaml). Runs as root
# (umoci and runc keep the files' owners).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "image: $*" >&2; }
fail() { say "$*"; exit 1; }

BUDGET_BYTES=$((60 * 1000 * 1000))
USER_ID=10001
version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/auth/Chart.yaml)"
[[ -n "$version" ]] || fail "no appVersion in charts/auth/Chart.yaml"
name="${AUTH_IMAGE_NAME:-ghcr.io/auth-dev/auth}:$version"

scripts/services.sh build-deps
scripts/services.sh image-deps

target_dir="$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
out_dir="$target_dir/image"
archive="$out_dir/auth-$version.oci.tar"
mkdir -p "$out_dir"
if [[ -n "${AUTH_IMAGE_BINARY:-}" ]]; then
    binary="$AUTH_IMAGE_BINARY"
    say "packing $binary (AUTH_IMAGE_BINARY) instead of building the release binary"
else
    say "building the release binary"
    cargo build --release --locked -p auth
    binary="$target_dir/release/auth"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/etc/ssl/certs" "$rootfs/usr/share"
chmod 1777 "$rootfs/tmp"

objcopy --only-keep-debug "$binary" "$out_dir/auth.debug"
objcopy --strip-all --add-gnu-debuglink="$out_dir/auth.debug" "$binary" "$rootfs/usr/local/bin/auth"

# The libraries the binary links, and the dynamic loader, at the paths ldd resolves.
while read -r library; do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
done < <(ldd "$binary" | awk '/=> \// { print $3 } /^\s*\/.*ld-linux/ { print $1 }' | sort -u)

cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
cp -r /usr/share/zoneinfo "$rootfs/usr/share/"
echo "root:x:0:0:root:/:/usr/sbin/nologin
auth:x:$USER_ID:$USER_ID:auth:/tmp:/usr/sbin/nologin" >"$rootfs/etc/passwd"
echo "root:x:0:
auth:x:$USER_ID:" >"$rootfs/etc/group"
echo "hosts: files dns" >"$rootfs/etc/nsswitch.conf"

layout="$work/layout"
created="$(git log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci unpack --image "$layout:$version" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$layout:$version" --history.created_by "scripts/image.sh" "$work/bundle"
labels=(
    "org.opencontainers.image.title=auth"
    "org.opencontainers.image.description=AUTH (Analytics of Utility Things): every role of the platform in one binary"
    "org.opencontainers.image.version=$version"
    "org.opencontainers.image.revision=$revision"
    "org.opencontainers.image.created=$created"
    "org.opencontainers.image.licenses=$(sed -n 's/^license *= *"\(.*\)"/\1/p' Cargo.toml | head -1)"
    "org.opencontainers.image.source=https://github.com/auth-dev/auth"
)
label_args=()
for label in "${labels[@]}"; do label_args+=(--config.label "$label" --manifest.annotation "$label"); done
umoci config --image "$layout:$version" --created "$created" --author "AUTH" \
    --config.user "$USER_ID:$USER_ID" --config.workingdir / \
    --config.entrypoint /usr/local/bin/auth --config.cmd=--help \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env TZDIR=/usr/share/zoneinfo \
    --config.exposedports 8080/tcp --config.exposedports 8088/tcp --config.exposedports 9464/tcp \
    "${label_args[@]}"
umoci gc --layout "$layout"
# containerd names an imported image after this annotation (no --base-name needed).
python3 scripts/name-oci-layout.py "$layout" "$name"
tar -C "$layout" --sort=name --owner=0 --group=0 --numeric-owner --mtime="$created" -cf "$archive" .

# The image runs as built: its own filesystem, its own user, in a runc container.
check="$work/check"
umoci unpack --image "$layout:$version" "$check" >/dev/null
python3 - "$check/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["args"] = ["/usr/local/bin/auth", "--version"]
config["process"]["terminal"] = False
json.dump(config, open(path, "w"))
EOF
printed="$(cd "$check" && runc run "auth-image-check-$$")" || fail "the image did not run auth --version: $printed"
[[ "$(cd "$check" && python3 -c 'import json; print(json.load(open("config.json"))["process"]["user"]["uid"])')" == "$USER_ID" ]] \
    || fail "the image does not run as uid $USER_ID"

compressed_bytes="$(python3 - "$layout" <<'EOF'
import json, os, sys
layout = sys.argv[1]
blob = lambda digest: os.path.join(layout, "blobs", *digest.split(":"))
index = json.load(open(os.path.join(layout, "index.json")))
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
print(sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"])
EOF
)"
say "$name ran in runc as uid $USER_ID: $printed"
say "archive: $archive ($(du -m "$archive" | cut -f1) MB), debug info: $out_dir/auth.debug"
say "compressed size: $((compressed_bytes / 1000 / 1000)) MB of the $((BUDGET_BYTES / 1000 / 1000)) MB budget"
((compressed_bytes <= BUDGET_BYTES)) || fail "the image is $compressed_bytes bytes compressed, over the budget of $BUDGET_BYTES"
echo "{\"image\":\"$name\",\"archive\":\"$archive\",\"compressedBytes\":$compressed_bytes}"
