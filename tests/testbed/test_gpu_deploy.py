"""The real deploy on test-bed hosts that present a recorded GPU: detect, plan, drivers, build id and unit.

Each host presents one recorded GPU (``lemfleet.testbed.add_gpu_host``: the GPU's tools on PATH answering the
facts' own invocations from ``tests/fixtures/gpu``, and for AMD a KFD topology in /sys/class). Then the
unmodified ``pyinfra inventories/testbed.py deploy.py --dry --diff`` runs against it: the deploy's own detect
step probes the host over SSH, the plan, drivers plan, build id and the unit and environment files are made by
the deploy's own code, and ``--diff`` prints each file the deploy would write. Nothing on the host changes. What
runs after (the drivers' packages, the GPU compile, the gate that must fail with no GPU) is the slow test,
``tests/testbed/test_gpu_deploy_slow.py``.

- Tesla T4 (nvidia-smi table, kubernetes-sigs/dra-driver-nvidia-gpu#889) on Debian 12: CUDA for sm_75 from
  Debian's non-free archive, the unit may open the NVIDIA nodes;
- RX 7900 XTX (rocminfo, ROCm/ROCm#3949) on Debian 13, whose HIP is too old: Vulkan on the KFD's render node;
- the same card on Debian sid: HIP for gfx1100, the unit may open /dev/kfd and the render node.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lemfleet import testbed
from tests.testbed.conftest import PROJECT, PyinfraRun, pyinfra

ANSI = re.compile(r"\x1b\[[0-9;]*m")
UNIT = "/etc/systemd/system/lemfleet-llama.service"
ENV = "/etc/lemfleet/lemfleet-llama.env"
RECORD = "/etc/lemfleet/deployed.json"
API_KEY = "lemfleet-gpu-deploy-test-key-0123456789"  # written as a secret: --diff must never show it


@dataclass(frozen=True)
class Case:
    recordings: dict[str, str]
    suite: str
    data: tuple[str, ...]
    backend: str
    targets: list[str]  # cuda_architectures or gpu_targets
    device_allow: set[str]
    groups: set[str]
    env: dict[str, str]


RX7900XTX = {"rocminfo": "rocminfo/rx7900xtx-gfx1100.txt"}
CASES = {
    "t4-debian12-cuda": Case(
        {"nvidia-smi": "nvidia-smi/tesla-t4-driver580-gpu-table-partial.txt"}, "bookworm",
        ("drivers_cuda_source=distro",), "cuda", ["75"],
        {"/dev/nvidiactl", "char-nvidia-uvm", "/dev/nvidia0"}, {"video"}, {"CUDA_DEVICE_ORDER": '"PCI_BUS_ID"'},
    ),
    "rx7900xtx-debian13-vulkan": Case(
        RX7900XTX, "trixie", (), "vulkan", [], {"/dev/dri/renderD128"}, {"render", "video"}, {},
    ),
    "rx7900xtx-sid-hip": Case(
        RX7900XTX, "sid", (), "hip", ["gfx1100"], {"/dev/kfd", "/dev/dri/renderD128"}, {"render", "video"}, {},
    ),
}  # fmt: skip


def written_files(output: str) -> dict[str, list[str]]:
    """The files ``--diff`` says the deploy would create, with their lines."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in ANSI.sub("", output).splitlines():
        line = raw.strip()
        if found := re.search(r"\] Will create (\S+)$", line):
            current = files.setdefault(found[1], [])
        elif current is not None and (line == "+" or line.startswith("+ ")):
            current.append(line[2:])
        elif not line.startswith("@@"):
            current = None
    return files


@pytest.fixture(scope="module")
def tiny_model_data(tiny_model: Path) -> tuple[str, str]:
    return "model_source=local", f"model_path={tiny_model}"


@pytest.fixture(scope="module", params=CASES)
def gpu_host(request: pytest.FixtureRequest) -> Iterator[tuple[Case, testbed.HostRecord]]:
    case = CASES[request.param]
    rec = testbed.add_gpu_host(case.recordings, suite=case.suite)
    yield case, rec
    testbed.remove(rec.name)


@pytest.fixture(scope="module")
def dry_run(gpu_host: tuple[Case, testbed.HostRecord], tiny_model_data: tuple[str, str]) -> PyinfraRun:
    case, rec = gpu_host
    args = ["inventories/testbed.py", "deploy.py", "--dry", "--diff", "--limit", rec.name]
    for item in (*case.data, *tiny_model_data, f"server_api_key={API_KEY}"):
        args += ["--data", item]
    return pyinfra(*args, timeout=600)


def test_the_plan_over_ssh_is_the_recorded_gpus(gpu_host: tuple[Case, testbed.HostRecord]) -> None:
    case, rec = gpu_host
    cmd = [sys.executable, "-m", "lemfleet", "plan", "inventories/testbed.py", "--limit", rec.name, "--json", "-"]
    for item in case.data:
        cmd += ["--data", item]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["ok"] and row["backend"] == case.backend, row
    assert (row["cuda_architectures"] or row["gpu_targets"]) == case.targets
    (gpu,) = row["gpus"]
    assert gpu["chosen"] and gpu["name"] in ("Tesla T4", "Radeon RX 7900 XTX"), gpu


def test_the_deploy_plans_the_gpu_build_and_its_drivers(
    gpu_host: tuple[Case, testbed.HostRecord], dry_run: PyinfraRun
) -> None:
    case, rec = gpu_host
    assert dry_run.returncode == 0, dry_run.output[-4000:]
    output = ANSI.sub("", dry_run.output)
    record = json.loads("\n".join(written_files(output)[RECORD]))
    build = record["build"]
    assert record["backend"] == build["backend"] == case.backend
    assert (build["cuda_architectures"] or build["gpu_targets"]) == case.targets
    # The build the deploy would compile (or receive, when the controller's build cache has it) and switch to is
    # the planned one, for the planned backend.
    bid = build["id"]
    assert re.search(rf"Compile llama-server {bid} \({case.backend}\)|Receive build {bid} from the controller", output)
    assert f"Switch to build {bid}" in output, output[-4000:]
    # The drivers step installs the backend's packages (its build packages where the host compiles).
    installs = re.findall(rf"Install the {case.backend} runtime (?:and build )?packages .*\({rec.name}\)", output)
    assert installs, output[-4000:]
    assert not testbed.ssh(rec, "ls /etc/lemfleet /opt/lemfleet 2>/dev/null; true").strip(), "--dry changed the host"
    assert API_KEY not in output and "/etc/lemfleet/api-key" not in written_files(output)
    assert '--api-key-file "/etc/lemfleet/api-key"' in output


def test_the_unit_may_open_the_planned_gpu_nodes_only(
    gpu_host: tuple[Case, testbed.HostRecord], dry_run: PyinfraRun
) -> None:
    case, _ = gpu_host
    files = written_files(dry_run.output)
    unit = files[UNIT]
    allowed = {line.split("=", 1)[1].removesuffix(" rw") for line in unit if line.startswith("DeviceAllow=")}
    assert allowed == case.device_allow, unit
    assert "PrivateDevices=no" in unit and "DevicePolicy=closed" in unit
    groups = {line.split("=", 1)[1] for line in unit if line.startswith("SupplementaryGroups=")}
    assert groups == case.groups, unit
    env = dict(line.split("=", 1) for line in files[ENV] if "=" in line and not line.startswith("#"))
    assert env["LEMFLEET_N_GPU_LAYERS"] == "999" and env["LEMFLEET_LOG_VERBOSITY"] == "4", env
    assert {k: v for k, v in env.items() if not k.startswith("LEMFLEET_")} == case.env, env
