#!/usr/bin/env bash
# The test command, over three tiers (README "Tests"):
#   tests/unit         pure: needs only the venv (no root, no network, no servers); under a minute
#   tests/testbed      real deploys on test-bed hosts (systemd-nspawn); needs root
#   tests/integration  real servers on loopback: sshd, llama-server (from the build cache the test bed fills),
#                      the local hub, Jupyter kernels; needs the Debian packages scripts/system-packages.sh lists
# With no arguments it runs all three, less the `slow` tests (extra llama.cpp compiles, GiB transfers). Any
# arguments go to pytest instead, e.g. `scripts/test.sh tests/unit` or `scripts/test.sh -m slow`. As root it
# installs the Debian packages the tiers it runs need; the venv comes from scripts/setup.sh (pip, no root).
set -euo pipefail
cd "$(dirname "$0")/.."

# The tiers the arguments name: paths under tests/unit need nothing more; no path at all means every tier.
here=$(pwd -P) testbed=0 integration=0 named=0
for arg in "$@"; do
    case $arg in -*) continue ;; esac
    path=${arg%%::*}
    [ -e "$path" ] || continue  # an option's value (-k EXPR, -m MARKERS), not a path
    named=1
    case $(realpath "$path")/ in
        "$here"/tests/unit/*) ;;
        "$here"/tests/testbed/*) testbed=1 ;;
        "$here"/tests/integration/*) integration=1 ;;
        *) testbed=1 integration=1 ;;  # tests/, the checkout, or anything holding more than one tier
    esac
done
[ $named -eq 1 ] || testbed=1 integration=1

if [ $testbed -eq 1 ] || [ $integration -eq 1 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        ./scripts/system-packages.sh
    elif [ $testbed -eq 1 ]; then
        echo "scripts/test.sh: the test-bed tier (tests/testbed, part of every run without a path) boots" \
             "systemd-nspawn hosts and needs root. Run it as root, or run the unit tier alone:" \
             "./scripts/test.sh tests/unit" >&2
        exit 2
    elif ! ./scripts/system-packages.sh; then
        echo "scripts/test.sh: the integration tier (tests/integration) needs the Debian packages above;" \
             "run it as root once to install them, or run the unit tier alone: ./scripts/test.sh tests/unit" >&2
        exit 2
    fi
fi
[ -x .venv/bin/python ] || ./scripts/setup.sh
if [ $# -eq 0 ]; then set -- -m "not slow"; fi
exec .venv/bin/python -m pytest "$@"
