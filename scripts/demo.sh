#!/usr/bin/env bash
# The main job on the embedded default: set up, boot a local test-bed host, deploy lemfleet to it
# (llama.cpp from the pinned PyPI sdist, a small generated gemma3 model) and smoke-test it.
# Needs root and a Debian/Ubuntu controller. Extra arguments go to `lemfleet demo` (e.g. --hub-model).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/system-packages.sh
./scripts/setup.sh
exec .venv/bin/python -m lemfleet demo "$@"
