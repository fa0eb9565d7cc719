#!/usr/bin/env bash
# The test command: unit tests, then the test-bed tests (real hosts; needs root).
# With no arguments it leaves out the `slow` tests (extra llama.cpp compiles, GiB transfers);
# any arguments go to pytest instead, e.g. `scripts/test.sh -m slow` or `scripts/test.sh tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test-bed and live tiers need root and Debian packages; as root, install what is missing.
if [ "$(id -u)" -eq 0 ]; then ./scripts/system-packages.sh; fi
[ -x .venv/bin/python ] || ./scripts/setup.sh
if [ $# -eq 0 ]; then set -- -m "not slow"; fi
exec .venv/bin/python -m pytest "$@"
