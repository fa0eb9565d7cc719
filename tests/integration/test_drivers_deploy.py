"""The drivers deploy, collected by pyinfra's own API against this machine (@local).

pyinfra gathers real facts from this host and generates each operation's
commands; nothing is executed. @local is also the one host that must never be
rebooted, which these tests check as well. What the operations find depends on
this machine (its packages, and tools such as ``useradd`` on the PATH, which a
non-root user's PATH lacks on Debian), so these are integration tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.server import KernelVersion

from lemfleet.roles.drivers import DriverPlan, DriverTarget, install_drivers, plan_drivers, plan_for_host
from lemfleet.roles.drivers.apply import reboot_allowed
from lemfleet.roles.drivers.plan_data import NOUVEAU_BLACKLIST
from lemfleet.roles.hostinfo import GpuRuntime, HostFacts

DEPLOY = "Install GPU drivers and runtime | "


@dataclass
class Op:
    name: str
    commands: list[object]
    has_condition: bool

    @property
    def text(self) -> str:
        return "\n".join(str(c) for c in self.commands)

    def uploaded(self) -> str:
        """The content of the op's file upload (files.put / apt.sources_file)."""
        for command in self.commands:
            src = getattr(command, "src", None)
            if isinstance(src, StringIO):
                return src.getvalue()
        raise AssertionError(f"{self.name} uploads nothing")


@pytest.fixture
def local_state() -> Iterator[State]:
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    connect_all(state)
    yield state
    for host in inventory:
        host.disconnect()


def collect(state: State, plan: DriverPlan, **kwargs: str) -> list[Op]:
    add_deploy(state, install_drivers, plan, **kwargs)
    host = state.inventory.get_host("@local")
    ops = []
    with ctx_state.use(state), ctx_host.use(host):
        for op_hash in state.get_op_order():
            (name,) = state.get_op_meta(op_hash).names
            data = state.get_op_data_for_host(host, op_hash)
            condition = data.global_arguments.get("_if")
            ops.append(Op(name.removeprefix(DEPLOY), list(data.command_generator()), bool(condition)))
    return ops


def names(ops: list[Op]) -> list[str]:
    return [op.name for op in ops]


def test_cpu_plan_adds_no_operation(local_state: State) -> None:
    plan = plan_drivers(DriverTarget("debian", "13", "trixie", "cpu"), {})
    assert collect(local_state, plan) == []


def test_vulkan_plan(local_state: State) -> None:
    plan = plan_drivers(DriverTarget("debian", "13", "trixie", "vulkan"), {})
    ops = collect(local_state, plan, service_user="lemfleet-test")
    assert names(ops) == [
        "Refresh apt lists older than an hour",
        "Install the vulkan runtime packages",
        "Install the vulkan runtime and build packages",
        "Ensure the group render",
        "Ensure the group video",
        "Let lemfleet-test open the GPU",
    ]
    user = ops[-1]
    assert "render" in user.text and "video" in user.text
    assert not any("reboot" in op.text for op in ops)


def test_rocm_plan_order_sources_and_kernel(local_state: State) -> None:
    plan = plan_drivers(DriverTarget("ubuntu", "24.04", "noble", "hip"), {})
    ops = collect(local_state, plan)
    assert names(ops) == [
        "Refresh apt lists older than an hour",
        "Install the tools that fetch repository keys",
        "Install the apt key /etc/apt/keyrings/rocm.gpg",
        "Add the apt source /etc/apt/sources.list.d/amdgpu.sources",
        "Add the apt source /etc/apt/sources.list.d/rocm.sources",
        "Add the apt source /etc/apt/sources.list.d/amdgraphics.sources",
        "Pin release o=repo.radeon.com",
        "Read the new repositories",
        "Install the GPU kernel driver",
        "Install the hip runtime packages",
        "Install the hip runtime and build packages",
        "Ensure the group render",
        "Ensure the group video",
    ]
    by_name = {op.name: op for op in ops}
    # pyinfra's apt.sources_file writes exactly what the plan renders.
    for source in plan.sources:
        assert by_name[f"Add the apt source {source.path}"].uploaded() == source.deb822()
    assert by_name["Pin release o=repo.radeon.com"].uploaded() == plan.pins[0].render()
    key = by_name["Install the apt key /etc/apt/keyrings/rocm.gpg"].text
    assert "--url https://repo.radeon.com/rocm/rocm.gpg.key" in key
    assert "CA8BB4727A47B4D09B4EE8969386B48A1A693C5C" in key  # checked before apt trusts it
    assert by_name["Read the new repositories"].has_condition
    # The kernel packages name this machine's kernel, read through pyinfra's fact.
    kernel_release = local_state.inventory.get_host("@local").get_fact(KernelVersion)
    kernel = by_name["Install the GPU kernel driver"].text
    assert f"amdgpu-dkms linux-headers-{kernel_release} linux-modules-extra-{kernel_release}" in kernel
    # The kernel driver is installed without an apt update of its own, whose change
    # would otherwise count as a driver change and reboot the host.
    assert "apt-get update" not in kernel
    # @local is never rebooted, whatever the plan allows.
    assert plan.reboot
    assert not any("reboot" in op.text for op in ops)


def test_cuda_repo_plan_blacklists_nouveau(local_state: State) -> None:
    plan = plan_drivers(DriverTarget("debian", "12", "bookworm", "cuda"), {})
    ops = collect(local_state, plan)
    by_name = {op.name: op for op in ops}
    url, sha256 = plan.keyring_debs[0].url, plan.keyring_debs[0].sha256
    deb = "/var/cache/lemfleet/drivers/cuda-keyring_1.1-1_all.deb"
    download = by_name[f"Download {url}"].text
    assert f"--url {url}" in download and f'[ "$actual" != {sha256} ]' in download
    assert f"dpkg --force-confdef --force-confold -i {deb}" in by_name["Install cuda-keyring_1.1-1_all.deb"].text
    blacklist = by_name[f"Write {NOUVEAU_BLACKLIST.path}"]
    assert blacklist.uploaded() == NOUVEAU_BLACKLIST.content
    initramfs = by_name["Rebuild the initramfs with the new module options"]
    assert initramfs.has_condition and initramfs.text == "update-initramfs -u"
    assert "install nvidia-open-580 linux-headers-" in by_name["Install the GPU kernel driver"].text
    packages = by_name["Install the cuda runtime and build packages"].text
    assert "install --no-install-recommends cuda-toolkit-13-1" in packages
    # A host that receives its build installs only what runs it: no toolkit.
    runtime = by_name["Install the cuda runtime packages"].text
    assert "cuda-cudart-13-1 libcublas-13-1" in runtime and "toolkit" not in runtime


def test_reboot_is_never_on_local_and_follows_the_plan() -> None:
    plan = plan_drivers(DriverTarget("ubuntu", "24.04", "noble", "hip"), {})
    assert reboot_allowed(plan, "gpu1.example")
    assert not reboot_allowed(plan, "@local")
    no_reboot = plan_drivers(DriverTarget("ubuntu", "24.04", "noble", "hip"), {"drivers_reboot": False})
    assert not reboot_allowed(no_reboot, "gpu1.example")
    container = plan_drivers(DriverTarget("ubuntu", "24.04", "noble", "hip", container=True), {})
    assert not reboot_allowed(container, "gpu1.example")
    vulkan = plan_drivers(DriverTarget("debian", "13", "trixie", "vulkan"), {})
    assert not reboot_allowed(vulkan, "gpu1.example")


def test_plan_for_host_reads_kernel_and_marker(local_state: State) -> None:
    facts = HostFacts(
        hostname="local",
        os_id="ubuntu",
        os_version="24.04",
        os_codename="noble",
        arch="x86_64",
        cpu_model="test",
        cpu_physical_cores=2,
        cpu_logical_cores=2,
        cpu_flags=frozenset(),
        mem_total_bytes=1 << 30,
        disk_free_bytes={},
        systemd_running=False,
        container=False,
        gpu_runtime=GpuRuntime(),
    )
    host = local_state.inventory.get_host("@local")
    with ctx_state.use(local_state), ctx_host.use(host):
        plan = plan_for_host(facts, "hip", {})
    release = host.get_fact(KernelVersion)
    assert plan.kernel_packages[1] == f"linux-headers-{release}"
    assert not plan.needs_kernel_release


def test_a_host_that_receives_its_build_installs_no_sdk_or_dev_package(local_state: State) -> None:
    plan = plan_drivers(DriverTarget("debian", "13", "trixie", "vulkan"), {})
    assert not {"libvulkan-dev", "glslc", "spirv-headers"} & set(plan.runtime_packages)
    add_deploy(local_state, install_drivers, plan, compiles=lambda: False)
    host = local_state.inventory.get_host("@local")
    conditions: dict[str, object] = {}
    for op_hash in local_state.get_op_order():
        (name,) = local_state.get_op_meta(op_hash).names
        conditions[name.removeprefix(DEPLOY)] = local_state.get_op_data_for_host(host, op_hash).global_arguments.get(
            "_if"
        )
    # Asked when the operations run: the runtime always, the build packages only where the build is compiled.
    assert not conditions["Install the vulkan runtime packages"]
    condition = conditions["Install the vulkan runtime and build packages"]
    assert callable(condition) and condition() is False
