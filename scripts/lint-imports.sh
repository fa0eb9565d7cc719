#!/usr/bin/env bash
# The layer contract (pyproject.toml [tool.importlinter]) checked over lemfleet as pip installs it, where
# roles/ is lemfleet.roles and tests/verify is lemfleet.verify. It runs outside the checkout, so that the
# checkout's own lemfleet/ (found first from the current directory) cannot stand in for the installed one.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
.venv/bin/pip install -q --disable-pip-version-check --no-deps --target "$site" .
cd "$site"
PYTHONPATH="$site" "$here/.venv/bin/lint-imports" --no-cache "$here/pyproject.toml"
