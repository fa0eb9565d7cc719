"""Shared helpers for the bench scripts: run pyinfra as a user would, and time things."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
