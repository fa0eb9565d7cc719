#!/usr/bin/env bash
# Create .venv with lemfleet and its tools installed (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Needs no root: only Python's venv module (Debian's python3-venv, which scripts/system-packages.sh installs).
if [ ! -x .venv/bin/python ]; then
    made=0
    [ -e .venv ] || made=1
    if ! "$PYTHON" -m venv .venv; then
        # A half-made venv (no pip) would pass the check above next time; remove it only if this run made it.
        if [ $made -eq 1 ]; then rm -rf .venv; fi
        echo "scripts/setup.sh: '$PYTHON -m venv' failed; on Debian or Ubuntu install python3-venv as root" \
             "(apt-get install python3-venv, or ./scripts/system-packages.sh), or set PYTHON to a Python >= 3.11" >&2
        exit 1
    fi
fi
for i in 1 2 3; do
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' && exit 0
    sleep $((i * 10))
done
exit 1
