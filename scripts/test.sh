#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the test tools (pinned), starts the
# S3-compatible server on 127.0.0.1, runs every test of the workspace, stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/env.sh

scripts/test-env.sh
trap 'scripts/s3-server.sh stop' EXIT
eval "$(scripts/s3-server.sh start)"
export FHIRLAKE_REQUIRE_S3=1

cargo test --workspace --all-targets --no-fail-fast "$@"
