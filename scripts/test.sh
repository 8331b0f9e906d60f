#!/usr/bin/env bash
# The README's test command: starts the real servers, lints, runs every test
# of the workspace, including those on Kafka, Redis, Mosquitto, PostgreSQL,
# MariaDB, S3 (moto) and the Kubernetes control plane, then fuzzes the gateway's body parser for a bounded time.
#
# Tests that need servers are `#[ignore]`d in a plain `cargo test --workspace` (which
# therefore needs no server) and run here with `--include-ignored` and
# AUTH_IT=1; a server that does not answer fails them.
#
# Then the dashboard in headless Chromium (Debian's, from build-deps) driven by
# playwright-core (npm, pinned in tests/browser/package-lock.json) against the
# `auth` binary cargo built; screenshots go to AUTH_ARTIFACTS (default
# <target dir>/browser-artifacts).
#
# AUTH_FUZZ_SECONDS (default 60) bounds the fuzz run; cargo-fuzz is installed
# from crates.io when missing and runs on the nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh build-deps
scripts/services.sh up
# A failed test keeps its Redis keys for inspection; the next run starts from
# an empty test server, or kept data would pile up in its AOF (it reached 20 GB).
redis-cli -p "${AUTH_REDIS_PORT:-6379}" FLUSHALL >/dev/null
export AUTH_IT=1
# The S3 server of scripts/services.sh; moto takes any credentials.
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:${AUTH_S3_PORT:-5000}}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-auth-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-auth-test}"

# Every stage runs even when an earlier one failed, so that one failure does
# not hide another; the script fails at the end if any did.
failed=()
cargo clippy --workspace --all-targets --locked -- -D warnings || failed+=("clippy")
# The test output is kept so that the end of the run can name the failures
# (CI shows only the last lines of a run).
test_log="$(mktemp)"
cargo test --workspace --locked --no-fail-fast -- --include-ignored 2>&1 | tee "$test_log" || failed+=("cargo test")

target_dir="$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
(cd tests/browser && npm ci --no-audit --no-fund --silent)
export AUTH_BIN="$target_dir/debug/auth" AUTH_ARTIFACTS="${AUTH_ARTIFACTS:-$target_dir/browser-artifacts}"
cargo build --locked -p auth || failed+=("cargo build -p auth")
node --test --test-concurrency=1 tests/browser/dashboard.test.mjs || failed+=("browser tests")
echo "browser screenshots: $AUTH_ARTIFACTS"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz run edge_body -- -max_total_time="${AUTH_FUZZ_SECONDS:-60}" || failed+=("fuzz")

if grep -qE '^test .+ \.\.\. FAILED$' "$test_log"; then
    echo "failed tests, and where they panicked:" >&2
    grep -E '^test .+ \.\.\. FAILED$' "$test_log" >&2
    grep -E -A3 "^thread '.+' \([0-9]+\) panicked at" "$test_log" | cut -c1-400 | head -n 80 >&2
fi
rm -f "$test_log"
if (( ${#failed[@]} )); then
    printf 'FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "every stage passed"
