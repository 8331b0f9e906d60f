#!/usr/bin/env bash
# The README's test command: lints, then every test of the workspace.
#
# Tests that need real servers (Kafka, Redis, ...) arrive with the issues that
# add those adapters; they run under AUTH_IT=1 against `scripts/services.sh`.
# Today every test runs on the embedded adapters and needs no server.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
