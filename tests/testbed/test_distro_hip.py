"""llama_cpp_source=distro for AMD GPUs on Debian sid test-bed hosts that present a recorded GPU.

Each host presents one recorded GPU (``lemfleet.testbed.add_gpu_host``: ``rocminfo`` on PATH answering from
``tests/fixtures/gpu`` and a KFD topology derived from it), so lemfleet's own probes read it over SSH and the
plan chooses the backend and gfx targets itself. Debian's ``libggml0-backend-hip`` has offload code for ten gfx
targets (roles/distro_builds.py; issue 17):

- RX 7900 XTX, gfx1100 (rocminfo, ROCm/ROCm#3949): covered. ``lemfleet plan`` with ``llama_cpp_source=auto``
  picks the distribution's build; behind ``slow``, the real deploy with ``llama_cpp_source=distro`` installs
  the packages (the HIP backend alone is 116 MB to fetch, 1.27 GB unpacked), holds them, and the on-host
  check reads gfx1100 among the offload targets of the installed ``libggml-hip.so``. There is no GPU here, so
  the host cannot serve on it: the test stops at the install and the coverage check; that the deploy then
  fails the host at the gate (no GPU computed) is asserted only as the reason it stops.
- MI300X VF, gfx942 (rocminfo and amd-smi from one cloud guest, Mahmood-Anaam/msp docs/amd_droplet.md):
  not covered. ``llama_cpp_source=distro`` is refused by ``lemfleet plan`` and by the deploy's ``--dry`` run,
  before anything changes on the host, naming gfx942 and the sources that would work; ``auto`` compiles.
  No package is installed: these run in seconds, in CI.

``./scripts/test.sh tests/testbed/test_distro_hip.py`` (fast), ``-m slow`` for the install.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lemfleet import testbed
from lemfleet.roles.distro_builds import BACKEND_LIBRARIES, TABLE, distro_offer
from tests.testbed.conftest import PROJECT, deploy, pyinfra

RX7900XTX = {"rocminfo": "rocminfo/rx7900xtx-gfx1100.txt"}
MI300X = {"rocminfo": "rocminfo/mi300x-vf.txt", "amd-smi": "amd-smi/mi300x-vf-default.txt"}
COVERED = distro_offer("debian", "", "sid", "x86_64", "hip", ("gfx1100",))
HIP_PACKAGE = "libggml0-backend-hip"
NO_GPU = "offload check failed: no GPU computed"
SID_HIP_TARGETS = TABLE[("debian", "sid")].backends["hip"].gpu_targets


def plan_row(rec: testbed.HostRecord, *data: str) -> tuple[int, dict[str, Any]]:
    """``lemfleet plan --json -`` for this host alone: its exit status and its row."""
    cmd = [sys.executable, "-m", "lemfleet", "plan", "inventories/testbed.py", "--limit", rec.name, "--json", "-"]
    for item in data:
        cmd += ["--data", item]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False)
    try:
        (row,) = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"lemfleet plan printed no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.returncode, row


def untouched(rec: testbed.HostRecord) -> bool:
    """Nothing of lemfleet's on the host, and no ggml package installed."""
    left = testbed.ssh(
        rec, "ls /etc/lemfleet /opt/lemfleet 2>/dev/null; dpkg -l 'libggml*' 2>/dev/null | grep ^ii; true"
    )
    return not left.strip()


@pytest.fixture(scope="module")
def gfx1100_host() -> Iterator[testbed.HostRecord]:
    rec = testbed.add_gpu_host(RX7900XTX, suite="sid")
    yield rec
    testbed.remove(rec.name)


@pytest.fixture(scope="module")
def gfx942_host() -> Iterator[testbed.HostRecord]:
    rec = testbed.add_gpu_host(MI300X, suite="sid")
    yield rec
    testbed.remove(rec.name)


def test_auto_picks_debians_hip_build_for_a_gfx_it_covers(gfx1100_host: testbed.HostRecord) -> None:
    status, row = plan_row(gfx1100_host, "llama_cpp_source=auto")
    assert status == 0 and row["ok"], row
    assert row["backend"] == "hip" and row["gpu_targets"] == ["gfx1100"], row
    assert row["llama_cpp_source"] == "distro", row
    offer = row["sources"]["distro"]
    assert offer["available"] and offer["targets"] == ["gfx1100"] and offer["missing_targets"] == [], offer
    assert offer["version"] == COVERED.versions and offer["version"][HIP_PACKAGE] == "0.27.0-1", offer
    assert "gfx1100" in row["reasons"]["llama_cpp_source"], row["reasons"]


def test_distro_is_refused_for_gfx942_naming_it_and_the_sources_that_would_work(
    gfx942_host: testbed.HostRecord,
) -> None:
    status, row = plan_row(gfx942_host, "llama_cpp_source=distro")
    assert status == 1 and not row["ok"], row
    assert row["backend"] == "hip" and row["gpu_targets"] == ["gfx942"], row
    (error,) = row["errors"]
    assert "gfx942" in error and f"{HIP_PACKAGE} 0.27.0-1 has no offload code for gfx942" in error, error
    assert all(f"'{s}'" in error for s in ("pypi-sdist", "git", "tarball", "auto")), error
    offer = row["sources"]["distro"]
    assert not offer["available"] and offer["missing_targets"] == ["gfx942"], offer
    assert row["sources"]["compile"]["available"] and row["sources"]["compile"]["targets"] == ["gfx942"], row


def test_auto_compiles_for_gfx942_and_says_why(gfx942_host: testbed.HostRecord) -> None:
    status, row = plan_row(gfx942_host, "llama_cpp_source=auto")
    assert status == 0 and row["ok"], row
    assert row["llama_cpp_source"] == "pypi-sdist", row
    reason = row["reasons"]["llama_cpp_source"]
    assert "compiled, since" in reason and "gfx942" in reason, reason


def test_the_deploy_refuses_distro_for_gfx942_before_anything_changes(
    gfx942_host: testbed.HostRecord, tiny_model: Path
) -> None:
    args = ["inventories/testbed.py", "deploy.py", "--dry", "--limit", gfx942_host.name]
    for item in ("llama_cpp_source=distro", "model_source=local", f"model_path={tiny_model}"):
        args += ["--data", item]
    run = pyinfra(*args, timeout=600)
    assert run.returncode != 0, run.output[-4000:]
    assert re.search(r"llama_cpp_source='distro' cannot serve this host's hip plan for gfx942", run.output), run.output[
        -4000:
    ]
    assert "Sources that would work: 'pypi-sdist', 'git', 'tarball'" in run.output, run.output[-4000:]
    assert untouched(gfx942_host), "the refused deploy changed the host"


@pytest.mark.slow
def test_the_hip_packages_install_and_the_host_reads_gfx1100_in_the_backend(
    gfx1100_host: testbed.HostRecord, tiny_model: Path
) -> None:
    """The whole deploy: drivers (sid's ROCm runtime), Debian's packages, then the gate, which must fail: no GPU."""
    rec = gfx1100_host
    run = deploy(rec.name, "llama_cpp_source=distro", "model_source=local", f"model_path={tiny_model}", timeout=7200)
    # It got past the install and its coverage check; with no GPU it can go no further than the gate's offload check.
    assert run.returncode != 0 and NO_GPU in run.output, run.output[-6000:]
    build = json.loads(testbed.ssh(rec, "cat /opt/lemfleet/llama.cpp/current/build.json"))
    assert build["source"] == "distro" and build["backend"] == "hip" and build["gpu_targets"] == ["gfx1100"], build
    assert build["packages"] == COVERED.versions, build
    held = set(testbed.ssh(rec, "apt-mark showhold").split())
    assert set(COVERED.versions) <= held, held
    installed = testbed.ssh(rec, f"dpkg-query -W -f='${{Version}}' {HIP_PACKAGE}")
    assert installed == COVERED.versions[HIP_PACKAGE]
    # What the host read from the installed library: every target the table says Debian's build covers, no more.
    listed = testbed.ssh(rec, "cat /opt/lemfleet/llama.cpp/current/offload-targets.txt").split()
    assert "gfx1100" in listed and sorted(listed) == sorted(SID_HIP_TARGETS), listed
    assert testbed.ssh(rec, f"test -s {BACKEND_LIBRARIES['hip']} && echo ok").strip() == "ok"
