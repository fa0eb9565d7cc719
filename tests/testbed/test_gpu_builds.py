"""GPU runtimes installed and llama-server compiled for them by the deploy's own steps, on test-bed hosts with no GPU.

A Debian 13 (trixie) host gets Vulkan and Debian's CUDA 12.4; a Debian 12 (bookworm) host gets Debian's CUDA 11.8,
a second toolchain for the same CUDA build; a Debian sid host gets Debian's ROCm (HIP 6.4). Each host presents a
recorded GPU (``lemfleet.testbed.add_gpu_host``: the GPU's tools on PATH answering from ``tests/fixtures/gpu``,
and a KFD topology for AMD): an RX 7900 XTX for Vulkan on Debian 13 (whose HIP is too old) and for HIP on sid, an
HGX H100 host whose driver is not loaded for CUDA on Debian 13 and a Tesla T4 on Debian 12. Its facts are read by
lemfleet's own probes over SSH, the plans choose backend, packages and cmake flags themselves, the drivers step
installs the packages (``gpuhost.prepare``: the deploy's detect, plan and drivers steps under pyinfra) and the
whole ``deploy.py`` compiles the pinned sdist (``gpuhost.deploy``), then fails the gate, as there is no GPU.

What this proves: *installed* (the Vulkan, Debian CUDA and Debian ROCm package lists on real Debian systems, with
no kernel driver inside a container), *compiled* by the deploy (llama-server linking libvulkan; libcudart and
libcublas with device code for exactly the planned architecture; libamdhip64, hipBLAS and rocBLAS with device code
for exactly the planned gfx target) and, for Vulkan, *run*: the build serves a tiny model on Mesa's lavapipe, a
software Vulkan device. No GPU computes here; that takes ``bench/gpu.sh`` on a GPU machine.

All slow (GiBs of CUDA and ROCm packages, 15+ minute compiles on two cores):
``./scripts/test.sh -m slow tests/testbed/test_gpu_builds.py``; ``-k "not bookworm"`` leaves out the Debian 12 CUDA
build, ``-k hip`` runs the HIP tests alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.roles.drivers import plan_drivers, target_from_facts
from lemfleet.roles.drivers.plan_data import NOUVEAU_BLACKLIST
from lemfleet.roles.drivers.vulkan import BUILD as VULKAN_BUILD_PACKAGES
from lemfleet.roles.facts.gpu import PROBE_COMMAND, parse_probe
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.platform_amd import HIP_MIN
from lemfleet.roles.platform_nvidia import toolkit_cc_range
from lemfleet.roles.platform_pins import version_tuple
from lemfleet.roles.platforms import RELEASES, VULKAN_MIN_HEADERS
from lemfleet.roles.settings_check import validate
from lemfleet.testbed.gpuhost import CURRENT_BINARY, Prepared, build_record, deploy, installed, prepare, push, remote
from lemfleet.testbed.recorded_gpu import expected_report

pytestmark = pytest.mark.slow

RX7900XTX = {"rocminfo": "rocminfo/rx7900xtx-gfx1100.txt"}  # ROCm/ROCm#3949
# Per suite: lspci of an HGX H100 host whose nvidia-smi cannot reach the driver (cc 9.0), and a Tesla T4's
# nvidia-smi (cc 7.5) for Debian 12, whose CUDA 11.8 cannot build ggml-cuda's Hopper code (roles/platforms.py).
CUDA_GPU = {
    "trixie": ({"lspci": "lspci/hgx-h100-x8-aspeed-bmc-nvswitch-host.txt",
                "nvidia-smi": "nvidia-smi/failure-couldnt-communicate-with-driver.txt"}, {"nvidia-smi": 9}),
    "bookworm": ({"nvidia-smi": "nvidia-smi/tesla-t4-driver580-gpu-table-partial.txt"}, {}),
}  # fmt: skip
CUDA_ARCH = {"trixie": "90", "bookworm": "75"}
CUDA_SUITES = ("trixie", "bookworm")
DEBIAN = {row.codename: key for key, row in RELEASES.items() if key[0] == "debian"}  # "trixie" -> ("debian", "13")
# The host compiler Debian's nvidia-cuda-toolkit depends on first ("g++-13 | ..." in trixie, "g++-11 | ..." in
# bookworm; apt-cache show, 2026-11-29): nvcc 12.4 takes GCC <= 13 and 11.8 GCC <= 11, older than each suite's
# default g++; Debian's nvcc wrapper picks that one itself, which is what the deploy's build relies on.
CUDA_HOST_CXX = {"trixie": "g++-13", "bookworm": "g++-11"}
NO_GPU = "offload check failed: no GPU computed"
PROBE_UNIT = "lemfleet-vulkan-probe"
PROBE_PORT = 18111


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hosts() -> Iterator[Callable[[str, dict[str, str], tuple[str, ...], dict[str, int] | None], Prepared]]:
    """Hosts presenting a recorded GPU, prepared by the drivers step once per (suite, GPU); removed after."""
    if os.geteuid() != 0:
        pytest.fail("test-bed tests need root; deselect them with -m 'not testbed'")
    made: dict[str, Prepared] = {}

    def host(suite: str, recordings: dict[str, str], data: tuple[str, ...] = (), rc: dict[str, int] | None = None):
        key = f"{suite} {sorted(recordings.items())}"
        if key not in made:
            made[key] = prepare(suite, recordings, data, rc)
        return made[key]

    yield host
    for prepared in made.values():
        testbed.remove(prepared.rec.name)


@pytest.fixture(scope="module")
def vulkan_host(hosts) -> Prepared:
    return hosts("trixie", RX7900XTX)


@pytest.fixture(scope="module")
def vulkan_server(vulkan_host: Prepared, tiny_model: Path) -> str:
    """The deploy's own Vulkan build; the gate then fails the host, as no GPU computed."""
    run = deploy(vulkan_host, model=tiny_model)
    assert run.returncode != 0 and NO_GPU in run.output, run.output[-6000:]
    return CURRENT_BINARY


@pytest.fixture(scope="module")
def hip_host(hosts) -> Prepared:
    return hosts("sid", RX7900XTX)


@pytest.fixture(scope="module")
def prepared_for_cuda(hosts) -> Callable[[str], Prepared]:
    """The suite's host with Debian's CUDA packages as the drivers step installs them, prepared once per module."""

    def host(suite: str) -> Prepared:
        recordings, rc = CUDA_GPU[suite]
        return hosts(suite, recordings, ("drivers_cuda_source=distro",), rc)

    return host


@pytest.fixture(scope="module", params=CUDA_SUITES)
def cuda_host(request: pytest.FixtureRequest, prepared_for_cuda: Callable[[str], Prepared]) -> Prepared:
    return prepared_for_cuda(request.param)


# -- Vulkan --------------------------------------------------------------------------------------------


def test_vulkan_build_dependencies_install_on_debian_13(vulkan_host: Prepared) -> None:
    rec, drivers = vulkan_host.rec, vulkan_host.drivers
    assert vulkan_host.plan.backend == "vulkan", vulkan_host.plan.reasons
    assert "-DGGML_VULKAN=ON" in vulkan_host.plan.cmake_flags
    assert set(VULKAN_BUILD_PACKAGES) <= set(drivers.packages)
    assert set(drivers.packages) <= installed(rec, *drivers.packages)
    assert "shaderc" in testbed.ssh(rec, "glslc --version")
    # What `pkg-config --modversion vulkan` prints, read from the .pc file itself (pkg-config is not a build dep).
    pc_version = testbed.ssh(rec, "sed -n 's/^Version: //p' $(dpkg -L libvulkan-dev | grep '/vulkan[.]pc$')").strip()
    assert version_tuple(pc_version) >= VULKAN_MIN_HEADERS
    assert pc_version == RELEASES[("debian", "13")].vulkan_headers, "the Debian 13 Vulkan pin is stale"
    # ggml-vulkan's CMakeLists.txt: find_package(SPIRV-Headers CONFIG REQUIRED).
    testbed.ssh(rec, "test -f /usr/include/spirv/unified1/spirv.hpp")
    testbed.ssh(rec, "test -f /usr/share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake")


def test_detection_does_not_take_lavapipe_for_a_gpu(vulkan_host: Prepared) -> None:
    """With Mesa installed, vulkaninfo lists llvmpipe, a CPU device: the real GPU probe must still find no GPU."""
    out = testbed.ssh(vulkan_host.rec, PROBE_COMMAND, timeout=120)
    assert "llvmpipe" in out, out[-2000:]  # Debian's vulkaninfo, not a recording: the host presents rocminfo only
    gpus, runtime = parse_probe(out.splitlines())
    recorded, _ = expected_report(RX7900XTX)
    assert [(g.vendor, g.name) for g in gpus] == [(g.vendor, g.name) for g in recorded]
    assert not runtime.vulkan_ok
    # Without the presented GPU, the host's own facts plan the CPU.
    bare = dataclasses.replace(vulkan_host.facts, gpus=(), gpu_runtime=runtime)
    assert plan_host(bare, validate({}), ModelInfo("lemfleet-tiny-gemma3")).backend == "cpu"


def test_vulkan_build_links_libvulkan(vulkan_host: Prepared, vulkan_server: str) -> None:
    rec = vulkan_host.rec
    record = build_record(rec, vulkan_server)
    assert record["backend"] == "vulkan" and "-DGGML_VULKAN=ON" in record["cmake_flags"]
    assert re.search(r"libvulkan\.so\.1 => /", testbed.ssh(rec, f"ldd {vulkan_server}"))
    listed = remote(rec, f"{vulkan_server} --list-devices")
    assert listed.returncode == 0, listed.stderr[-2000:]
    # By default ggml-vulkan uses GPUs only and skips CPU devices such as lavapipe (ggml_vk_instance_init).
    assert "Available devices:" in listed.stdout and "(none)" in listed.stdout, listed.stdout


def test_vulkan_build_serves_on_lavapipe(vulkan_host: Prepared, vulkan_server: str, tiny_model: Path) -> None:
    """GGML_VK_VISIBLE_DEVICES=0 selects lavapipe explicitly: every layer runs through ggml-vulkan's shaders."""
    rec, model = vulkan_host.rec, "/root/lemfleet-tiny-gemma3.gguf"
    push(rec, tiny_model, model)
    listed = testbed.ssh(rec, f"GGML_VK_VISIBLE_DEVICES=0 {vulkan_server} --list-devices")
    assert re.search(r"Vulkan0: llvmpipe", listed), listed
    testbed.ssh(
        rec,
        f"systemd-run --unit={PROBE_UNIT} --setenv=GGML_VK_VISIBLE_DEVICES=0 "
        f"{vulkan_server} -m {model} -ngl 99 --host 127.0.0.1 --port {PROBE_PORT}",
    )
    base = f"http://127.0.0.1:{PROBE_PORT}"
    request = json.dumps({"prompt": "Hello", "n_predict": 8, "ignore_eos": True})
    try:
        # lavapipe compiles each shader pipeline with LLVM on the CPU: loading takes a while.
        wait = f"for i in $(seq 600); do curl -sf {base}/health && exit 0; sleep 1; done; exit 1"
        testbed.ssh(rec, wait, timeout=660)
        reply = json.loads(testbed.ssh(rec, f"curl -sf -d {shlex.quote(request)} {base}/completion", timeout=600))
    finally:
        log = remote(rec, f"journalctl -u {PROBE_UNIT} --no-pager -o cat").stdout
        remote(rec, f"systemctl stop {PROBE_UNIT}; systemctl reset-failed {PROBE_UNIT}")
    assert reply["tokens_predicted"] == 8, reply
    # Seen on 2026-11-29 with the pinned llama.cpp: the server answered through ggml-vulkan on lavapipe
    # (8 tokens at ~57 t/s). At the default log verbosity (3) it logs no load lines at all; a deployed GPU
    # service runs at 4 so that the smoke step can read them (roles/smoke.py).
    assert "eval time" in log, log[-3000:]


# -- CUDA, from Debian's non-free archive ------------------------------------------------------------------


def test_cuda_toolkit_installs_without_kernel_driver_in_a_container(cuda_host: Prepared) -> None:
    rec, suite, drivers = cuda_host.rec, cuda_host.suite, cuda_host.drivers
    assert cuda_host.plan.backend == "cuda", cuda_host.plan.reasons
    assert cuda_host.facts.container, "the test-bed host should be detected as a container"
    # The same host outside a container gets Debian's driver and the nouveau blacklist: the container alone drops them.
    target = target_from_facts(cuda_host.facts, "cuda")
    bare_metal = dataclasses.replace(target, container=False, runtime_working=False, kernel_driver_loaded=False)
    outside = plan_drivers(bare_metal, cuda_host.settings)
    assert any(name.endswith("kernel-dkms") for name in outside.kernel_packages) and NOUVEAU_BLACKLIST in outside.files
    assert not drivers.kernel_packages and not drivers.files and not drivers.reboot_may_be_needed, drivers.describe()

    assert set(drivers.packages) <= installed(rec, *drivers.packages)
    toolkit = RELEASES[DEBIAN[suite]].cuda_toolkit
    assert f"release {toolkit}," in testbed.ssh(rec, "nvcc --version"), "the Debian CUDA toolkit pin is stale"
    testbed.ssh(rec, f"{CUDA_HOST_CXX[suite]} --version")  # pulled in by nvidia-cuda-toolkit itself
    assert not installed(rec, "*-dkms", "linux-headers-*", "linux-image-*")
    assert remote(rec, f"test -e {NOUVEAU_BLACKLIST.path}").returncode != 0


def test_cuda_build_compiles_for_one_architecture(cuda_host: Prepared, tiny_model: Path) -> None:
    rec, suite = cuda_host.rec, cuda_host.suite
    assert cuda_host.plan.cuda_architectures == (CUDA_ARCH[suite],)
    run = deploy(cuda_host, model=tiny_model)
    assert run.returncode != 0, run.output[-6000:]  # built, then failed by the gate: no GPU computes here
    binary = CURRENT_BINARY
    record = build_record(rec, binary)
    assert record["backend"] == "cuda" and f"-DCMAKE_CUDA_ARCHITECTURES={CUDA_ARCH[suite]}" in record["cmake_flags"]
    ldd = testbed.ssh(rec, f"ldd {binary}")
    assert re.search(r"libcudart\.so\.\S+ => /", ldd) and re.search(r"libcublas\.so\.\S+ => /", ldd), ldd
    # Device code for exactly the planned architecture, and none other.
    cubins = re.findall(r"\.(sm_\w+)\.cubin", testbed.ssh(rec, f"cuobjdump --list-elf {binary}", timeout=300))
    assert cubins and set(cubins) == {f"sm_{CUDA_ARCH[suite]}"}, sorted(set(cubins))
    # No GPU in the container: the CUDA backend is linked in and asks the driver, which finds no device.
    listed = remote(rec, f"{binary} --list-devices")
    assert listed.returncode == 0 and "Available devices:" in listed.stdout, listed.stdout + listed.stderr
    assert "failed to initialize CUDA" in listed.stderr, listed.stderr[-2000:]


def test_debian_12_cuda_cannot_build_ggml_cuda_for_hopper(
    prepared_for_cuda: Callable[[str], Prepared], tiny_model: Path
) -> None:
    """Why the pins stop Debian 12's CUDA 11.8 at compute capability 8.9: told to build for sm_90, the build fails."""
    prepared = prepared_for_cuda("bookworm")
    assert toolkit_cc_range(RELEASES[("debian", "12")].cuda_toolkit)[1] < (9, 0)
    run = deploy(prepared, 'gpu_targets=["90"]', model=tiny_model)
    assert run.returncode != 0, run.output[-6000:]
    assert 'identifier "cudaGridDependencySynchronize" is undefined' in run.output, run.output[-6000:]


# -- HIP, from Debian sid's ROCm packages ------------------------------------------------------------------


def test_hip_sdk_installs_from_debian_sid(hip_host: Prepared) -> None:
    rec, plan, drivers = hip_host.rec, hip_host.plan, hip_host.drivers
    assert plan.backend == "hip", plan.reasons
    assert plan.gpu_targets == ("gfx1100",) and "-DGPU_TARGETS=gfx1100" in plan.cmake_flags
    assert drivers.source == "debian" and set(drivers.service_groups) == {"render", "video"}
    assert set(drivers.packages) <= installed(rec, *drivers.packages)
    packaged = testbed.ssh(rec, "dpkg-query -W -f='${Version}' libamdhip64-dev")
    hip = RELEASES[("debian", "sid")].hip
    assert hip and packaged.startswith(hip + "-"), f"the Debian sid HIP pin is stale: {packaged}"
    # ggml-hip refuses HIP below 6.1; hipconfig is what the build script asks for the compiler and root.
    assert version_tuple(testbed.ssh(rec, "hipconfig --version").split("-")[0]) >= HIP_MIN
    testbed.ssh(
        rec,
        'test -x "$(hipconfig -l)/clang" && test -f "$(hipconfig -R)/lib/cmake/hip/hip-config.cmake" '
        '|| test -n "$(find "$(hipconfig -R)/lib" -name hip-config.cmake -print -quit)"',
    )


def test_hip_build_compiles_for_the_detected_target_only(hip_host: Prepared, tiny_model: Path) -> None:
    rec = hip_host.rec
    run = deploy(hip_host, model=tiny_model)
    assert run.returncode != 0, run.output[-6000:]  # built, then failed by the gate: no GPU computes here
    binary = CURRENT_BINARY
    record = build_record(rec, binary)
    assert record["backend"] == "hip" and "-DGPU_TARGETS=gfx1100" in record["cmake_flags"]
    ldd = testbed.ssh(rec, f"ldd {binary}")
    for library in ("libamdhip64", "libhipblas", "librocblas"):
        assert re.search(rf"{library}\.so\S* => /", ldd), ldd
    # Device code for exactly the planned target: the offload bundles name each target they carry.
    bundles = testbed.ssh(rec, f"grep -aoE 'amdgcn-amd-amdhsa--gfx[0-9a-z]+' {binary} | sort -u", timeout=300)
    assert {line.rsplit("--", 1)[1] for line in bundles.split()} == {"gfx1100"}, bundles
    # No GPU in the container: the HIP backend is linked in and finds no device.
    listed = remote(rec, f"{binary} --list-devices")
    assert "Available devices:" in listed.stdout, listed.stdout + listed.stderr
    assert "ROCm" in listed.stderr, listed.stderr[-2000:]
