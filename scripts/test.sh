#!/usr/bin/env bash
# The README's test command: starts the real servers, lints, then runs every
# test of the workspace, including those on Kafka and Redis.
#
# Tests that need servers are `#[ignore]`d in a plain `cargo test` (which
# therefore needs no server) and run here with `--include-ignored` and
# AUTH_IT=1; a server that does not answer fails them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh build-deps
scripts/services.sh up
export AUTH_IT=1

cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --include-ignored
