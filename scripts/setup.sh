#!/usr/bin/env bash
# Create .venv with lemfleet and its tools installed (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
for i in 1 2 3; do
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' && exit 0
    sleep $((i * 10))
done
exit 1
