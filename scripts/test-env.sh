#!/usr/bin/env bash
# Installs what the test suite needs besides cargo, pinned, into ./.venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=scripts/requirements-test.txt
STAMP=.venv/.installed-$(sha256sum "$REQ" | cut -c1-16)
if [[ ! -f "$STAMP" ]]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r "$REQ"
    touch "$STAMP"
fi
