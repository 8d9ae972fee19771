#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the test tools (pinned), starts the
# S3-compatible server on 127.0.0.1, runs every test of the workspace, stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

# mold links the big test binaries several times faster; used when present (.ci/run installs it).
if command -v mold >/dev/null 2>&1; then
    export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-fuse-ld=mold"
fi

scripts/test-env.sh
trap 'scripts/s3-server.sh stop' EXIT
eval "$(scripts/s3-server.sh start)"
export FHIRLAKE_REQUIRE_S3=1

cargo test --workspace --all-targets "$@"
