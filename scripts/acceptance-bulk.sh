#!/usr/bin/env bash
# Acceptance run of the Bulk Data client at scale (issue 7): the mock Bulk Data server of the test
# suite serves the 100-patient Synthea export ../shared/data/synthea/bulk-data-server-100-patients
# MULTIPLIER times (default 100: 10,000 patients, 3.85 million resources) on 127.0.0.1, and
# `fhirlake ingest http://127.0.0.1:PORT/fhir --bulk --lake L --key-file K` (default safe-harbor
# de-identification) must end with every exported resource in the lake, counted by type.
#
# Not part of CI (34 minutes on 2 cores in a debug build). Needs ~6 GB of memory at multiplier 100
# (the mock keeps the export in memory). Figures: docs/bulk.md. Usage:
#   scripts/acceptance-bulk.sh                 # release build, multiplier 100
#   PROFILE=debug MULTIPLIER=1 scripts/acceptance-bulk.sh   # a quick check of the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
profile_flag=(--release)
if [[ "${PROFILE:-release}" == debug ]]; then
    profile_flag=()
fi
export FHIRLAKE_ACCEPTANCE_MULTIPLIER="${MULTIPLIER:-100}"
exec cargo test "${profile_flag[@]}" -p fhirlake-tests --test e2e -- \
    --ignored --exact bulk::acceptance_ingest_bulk_at_scale --nocapture
