#!/usr/bin/env bash
# Removes this workspace's own build output from the shared target directory
# (CARGO_TARGET_DIR, default ~/.cache/auth/target), keeping the compiled
# dependencies that make a build on 2 cores affordable.
#
# Each clone builds the workspace's crates anew, and their artifacts carry a
# hash per clone and per feature set, so without pruning they pile up (70 GB
# within days filled the disk and CI failed writing the test binaries).
# Run by .ci/run before building; safe to run any time no cargo is running.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/auth/target}"
[[ -d "$target_dir" ]] || exit 0

mapfile -t targets < <(cargo metadata --format-version 1 --no-deps --offline \
    | python3 -c '
import json, sys
metadata = json.load(sys.stdin)
for package in metadata["packages"]:
    print("package", package["name"])
    for target in package["targets"]:
        print("target", target["name"].replace("-", "_"))
')

before="$(du -sm "$target_dir" | cut -f1)"
for profile in debug release; do
    dir="$target_dir/$profile"
    [[ -d "$dir" ]] || continue
    rm -rf "$dir/incremental"
    for entry in "${targets[@]}"; do
        kind="${entry%% *}" name="${entry#* }"
        if [[ "$kind" == package ]]; then
            rm -rf "$dir/.fingerprint/$name"-* "$dir/build/$name"-*
        else
            rm -f "$dir/deps/$name"-* "$dir/deps/lib$name"-*
        fi
    done
done
after="$(du -sm "$target_dir" | cut -f1)"
echo "pruned the workspace's own build output: ${before} MB -> ${after} MB in $target_dir"
