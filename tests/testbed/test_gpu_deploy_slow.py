"""The whole deploy on test-bed hosts that present a recorded GPU, through the gate that must fail them.

Debian 13 hosts present an RX 7900 XTX (rocminfo, ROCm/ROCm#3949, and a KFD topology derived from it; see
``lemfleet/testbed/recorded_gpu.py``). The unmodified ``pyinfra inventories/testbed.py deploy.py`` then runs
every step for that GPU: detect → plan (Vulkan, Debian 13's HIP being too old) → drivers (Debian's Vulkan
packages) → compile llama-server for Vulkan → unit with DeviceAllow for the render node → start → smoke →
offload check. There is no GPU, and ggml-vulkan skips Mesa's lavapipe (a CPU device) unless told to use it, so
the server loads the model into host memory and the offload check must fail the host with "no GPU computed".

- A first deploy has no last good state: the unit is stopped and disabled, and the host fails with the diagnosis.
- A host already serving on the CPU (``gpu_backend=cpu``, a state that passed the gate) is rolled back to it and
  serves again.

Slow: Debian 13's CPU and Vulkan builds are compiled here (the build cache holds Debian 12's CPU build only); the
second host receives the first host's Vulkan build through the controller's build cache. ``-k first`` runs the
first deploy alone. ``./scripts/test.sh -m slow tests/testbed/test_gpu_deploy_slow.py``
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet import testbed
from tests.testbed.conftest import PROJECT, deploy

pytestmark = pytest.mark.slow

RX7900XTX = {"rocminfo": "rocminfo/rx7900xtx-gfx1100.txt"}
SUITE = "trixie"
UNIT = "lemfleet-llama.service"
NO_GPU = re.compile(r"offload check failed: no GPU computed: the model's weights were loaded into host memory only")


@pytest.fixture(scope="module")
def gpu_hosts() -> Iterator[list[testbed.HostRecord]]:
    hosts = [testbed.add_gpu_host(RX7900XTX, suite=SUITE) for _ in range(2)]
    yield hosts
    for rec in hosts:
        testbed.remove(rec.name)


def model_data(tiny_model: Path) -> tuple[str, str]:
    return "model_source=local", f"model_path={tiny_model}"


def smoke_result(rec: testbed.HostRecord) -> dict:
    return json.loads((PROJECT / "out" / "smoke" / f"{rec.name}.json").read_text())


def test_first_deploy_compiles_for_the_gpu_then_stops_with_no_gpu_computed(
    gpu_hosts: list[testbed.HostRecord], tiny_model: Path
) -> None:
    rec = gpu_hosts[0]
    run = deploy(rec.name, *model_data(tiny_model), timeout=3 * 3600)
    assert run.returncode != 0, run.output[-4000:]
    assert NO_GPU.search(run.output), run.output[-6000:]
    assert "there is no last good state to go back to, so lemfleet-llama.service is stopped and disabled" in run.output
    # What ran is what the plan asked for: a Vulkan build, linking libvulkan, in the unit that was started.
    record = json.loads(testbed.ssh(rec, "cat /opt/lemfleet/llama.cpp/current/build.json"))
    assert record["backend"] == "vulkan" and "-DGGML_VULKAN=ON" in record["cmake_flags"], record
    assert "libvulkan.so.1 => /" in testbed.ssh(rec, "ldd /opt/lemfleet/llama.cpp/current/bin/llama-server")
    unit = testbed.ssh(rec, f"cat /etc/systemd/system/{UNIT}")
    assert "DeviceAllow=/dev/dri/renderD128 rw" in unit and "DevicePolicy=closed" in unit, unit
    # The server itself ran and answered: only the offload check failed it.
    steps = {s["name"]: s["status"] for s in smoke_result(rec)["steps"]}
    assert steps["health"] == steps["chat"] == "passed", steps
    state = testbed.ssh(rec, f"systemctl is-enabled {UNIT}; systemctl is-active {UNIT}", check=False).split()
    assert state == ["disabled", "inactive"], state
    assert testbed.ssh(rec, "test -e /var/lib/lemfleet/last-good/build && echo kept; true").strip() == ""


def test_a_host_with_a_last_good_state_is_rolled_back_to_it(
    gpu_hosts: list[testbed.HostRecord], tiny_model: Path
) -> None:
    rec = gpu_hosts[1]
    cpu = deploy(rec.name, *model_data(tiny_model), "gpu_backend=cpu", timeout=3 * 3600)
    assert cpu.returncode == 0, cpu.output[-4000:]
    good = json.loads(testbed.ssh(rec, "cat /etc/lemfleet/deployed.json"))
    assert good["backend"] == "cpu"

    run = deploy(rec.name, *model_data(tiny_model), timeout=3 * 3600)
    assert run.returncode != 0, run.output[-4000:]
    assert re.search(r"rolled back: " + NO_GPU.pattern, run.output), run.output[-6000:]
    assert "the last good state serves again" in run.output, run.output[-4000:]
    # The CPU state serves again, as it was; the Vulkan build stays installed beside it for diagnosis.
    assert json.loads(testbed.ssh(rec, "cat /etc/lemfleet/deployed.json"))["build"]["id"] == good["build"]["id"]
    assert json.loads(testbed.ssh(rec, "cat /opt/lemfleet/llama.cpp/current/build.json"))["backend"] == "cpu"
    assert testbed.ssh(rec, f"systemctl is-active {UNIT}").strip() == "active"
    assert "DeviceAllow" not in testbed.ssh(rec, f"cat /etc/systemd/system/{UNIT}")
