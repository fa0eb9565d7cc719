"""``lemfleet plan`` against real test-bed hosts: facts over SSH, a CPU plan with its reasons, nothing changed."""

from __future__ import annotations

import json
import subprocess
import sys

from lemfleet import testbed
from tests.testbed.conftest import PROJECT


def test_plan_reports_cpu_for_every_host_and_changes_nothing(bed):
    before = {r.name: testbed.ssh(r, "ls -a /etc /opt | md5sum") for r in bed}
    proc = subprocess.run(
        [sys.executable, "-m", "lemfleet", "plan", "inventories/testbed.py", "--json", "-"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {row["host"]: row for row in json.loads(proc.stdout)}
    assert set(rows) >= {r.name for r in bed}
    for rec in bed:
        row = rows[rec.name]
        assert row["ok"] and row["backend"] == "cpu", row
        assert row["os"].startswith("debian 12"), row["os"]
        assert row["gpus"] == []
        assert "no AMD or NVIDIA GPU" in row["reasons"]["backend"]
        assert "-DGGML_NATIVE=ON" in row["cmake_flags"]
    assert {r.name: testbed.ssh(r, "ls -a /etc /opt | md5sum") for r in bed} == before


def test_plan_table_for_people(bed):
    proc = subprocess.run(
        [sys.executable, "-m", "lemfleet", "plan", "inventories/testbed.py", "--limit", bed[0].name],
        cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BACKEND" in proc.stdout and bed[0].name in proc.stdout and "cpu" in proc.stdout
