"""Fixtures for tests on real test-bed hosts.

Every test in this folder carries the ``testbed`` marker. They need root,
``systemd-nspawn``, ``debootstrap`` and network namespaces; when those are
missing the tests fail loudly rather than skip, because a test bed that
silently did not run proves nothing. Deselect them with ``-m "not testbed"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lemfleet import testbed

PROJECT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.testbed)


@pytest.fixture(scope="session")
def bed() -> Iterator[list[testbed.HostRecord]]:
    """Three fresh bookworm hosts for the whole session, and a clean controller after it."""
    if os.geteuid() != 0:
        pytest.fail("test-bed tests need root; deselect them with -m 'not testbed'")
    hosts = testbed.up(3)
    yield hosts
    testbed.down(quiet=True)
    left = testbed.leftovers()
    assert not left, f"teardown left these behind: {left}"


@dataclass
class PyinfraRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        start = self.stdout.find("{")
        return json.loads(self.stdout[start:])

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def pyinfra(*args: str, timeout: float = 3600, env: dict[str, str] | None = None) -> PyinfraRun:
    """Run the pyinfra CLI from the project root, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "pyinfra", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return PyinfraRun(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The demo's generated gemma3 GGUF (vocab from the pinned llama-cpp-python sdist)."""
    from lemfleet.demo import demo_model

    return demo_model()


def deploy(host: str, *data: str, timeout: float = 3600) -> PyinfraRun:
    """``pyinfra inventories/testbed.py deploy.py`` limited to ``host``, with ``--data`` items."""
    args = ["inventories/testbed.py", "deploy.py", "-y", "--json", "--limit", host]
    for item in data:
        args += ["--data", item]
    return pyinfra(*args, timeout=timeout)


@pytest.fixture(scope="session")
def fleet(bed: list[testbed.HostRecord], tiny_model: Path) -> list[testbed.HostRecord]:
    """tb1 and tb2 deployed with the tiny model: tb1 compiles llama.cpp, tb2 reuses that build."""
    deployed = bed[:2]
    for rec in deployed:
        run = deploy(rec.name, "model_source=local", f"model_path={tiny_model}")
        assert run.returncode == 0, run.output[-4000:]
    return deployed
