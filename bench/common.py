"""Shared helpers for the bench scripts: run pyinfra as a user would, and time things."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lemfleet import testbed

PROJECT = Path(__file__).resolve().parent.parent


def pyinfra(*args: str, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """(seconds, exit code, output) of one pyinfra run from the project root."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pyinfra", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return time.monotonic() - started, proc.returncode, proc.stdout + proc.stderr


def deploy_args(host: str, *data: str) -> list[str]:
    args = ["inventories/testbed.py", "deploy.py", "-y", "--limit", host]
    for item in data:
        args += ["--data", item]
    return args


def smoke_json(host: str) -> dict[str, Any]:
    return json.loads((PROJECT / "out" / "smoke" / f"{host}.json").read_text())


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def timed_command(command: list[str]) -> float:
    """Seconds one command takes from the project root; it must succeed."""
    started = time.monotonic()
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return time.monotonic() - started


def testbed_names(count: int) -> list[str] | None:
    """The first ``count`` test-bed hosts, or None (saying how to boot them) when there are fewer."""
    names = [rec.name for rec in testbed.load()][:count]
    if len(names) < count:
        print(f"the test bed has {len(names)} hosts; run: python -m lemfleet.testbed up {count}", file=sys.stderr)
        return None
    return names
