# Sourced by scripts/test.sh and .ci/run: one RUSTFLAGS value for every cargo call, so clippy and
# the test build share build-script and proc-macro artifacts. mold links several times faster.
if [[ -z "${RUSTFLAGS:-}" ]] && command -v mold >/dev/null 2>&1; then
    export RUSTFLAGS="-C link-arg=-fuse-ld=mold"
fi
