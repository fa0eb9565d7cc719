"""The plan for the first real GPU machine lemfleet ran on: this workplace's lent H200 (bench/device_h200.sh).

Recorded there on 2026-11-30 (tests/fixtures/gpu/INDEX.md, "Recorded by lemfleet"): GpuProbe's whole
output and HostProbe's, the three nvidia-smi forms one by one, and the log of the CUDA llama-server at
verbosity 4. There llama-server was built from the pinned source with exactly ``BUILT_WITH`` (256 s, -j16,
nvcc 13.0) under the build id below, which the machine planned for itself, and served a 1.1 GB gemma3 GGUF
with every layer on the GPU; the smoke test passed and the gate's offload check passed on that log.
"""

from __future__ import annotations

import re
from pathlib import Path

from lemfleet.roles.detect import facts_from_sections
from lemfleet.roles.facts.gpu import parse_probe
from lemfleet.roles.facts.gpu_nvidia import parse_nvidia_smi
from lemfleet.roles.facts.host import split_sections
from lemfleet.roles.hostinfo import HostFacts
from lemfleet.roles.llama_cpp import build_id
from lemfleet.roles.llama_sources import Source
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.settings_check import validate
from lemfleet.roles.smoke import LOAD_LINES, offload_problem
from tests.fixtures.gpu.hosts import read

FIXTURES = Path(__file__).parents[1] / "fixtures"
PROBE = FIXTURES / "gpu/probe/h200-lent-vm-gpu-probe.txt"
HOST = FIXTURES / "host/h200-lent-vm-ubuntu2404-probe.txt"
SERVER_LOG = Path(__file__).parent / "fixtures/llama-server/h200-cuda-verbosity4.log"
MIB = 2**20

# The cmake flags of the build that ran on the H200 (its build.sh, as llama_cpp.build_script rendered it).
BUILT_WITH = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=ON", "-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90",
)  # fmt: skip


def h200_facts() -> HostFacts:
    gpus, runtime = parse_probe(PROBE.read_text().splitlines())
    return facts_from_sections(split_sections(HOST.read_text().splitlines()), gpus, runtime)


def test_the_probe_sees_one_h200_on_a_healthy_driver() -> None:
    facts = h200_facts()
    (gpu,) = facts.gpus
    assert (gpu.vendor, gpu.name, gpu.index, gpu.compute_capability, gpu.vram_bytes) == (
        "nvidia", "NVIDIA H200", 0, "9.0", 143771 * MIB,
    )  # fmt: skip
    assert (gpu.pci_slot, gpu.pci_id, gpu.kernel_driver, gpu.mig_enabled) == (
        "0000:00:06.0",
        "10de:2335",
        "nvidia",
        False,
    )
    assert set(gpu.sources) == {"nvidia-smi", "pci-sysfs"}, "no lspci there: the bus came from sysfs"
    runtime = facts.gpu_runtime
    assert runtime.nvidia_smi_ok and runtime.nvidia_driver_version == "580.159.04"
    assert (runtime.faults, runtime.probe_errors, runtime.fact_errors) == ((), (), ())
    assert {"/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"} <= set(runtime.device_nodes)
    assert (facts.os_id, facts.os_version, facts.cpu_physical_cores, facts.systemd_running) == (
        "ubuntu",
        "24.04",
        16,
        False,
    )


def test_each_nvidia_smi_form_alone_gives_the_same_gpu() -> None:
    table = parse_nvidia_smi(read("nvidia-smi/h200-lent-vm-driver580-table.txt"))
    query = parse_nvidia_smi(read("nvidia-smi/h200-lent-vm-driver580-query-csv.txt"))
    listing = parse_nvidia_smi(read("nvidia-smi/h200-lent-vm-driver580-list.txt"))
    for gpus, runtime in (table, query):
        (gpu,) = gpus
        assert (gpu.name, gpu.compute_capability, gpu.vram_bytes, gpu.pci_slot) == (
            "NVIDIA H200", "9.0", 143771 * MIB, "0000:00:06.0",
        )  # fmt: skip
        assert runtime.nvidia_driver_version == "580.159.04"
    assert table[1].nvidia_cuda_version == "13.0"
    (listed,) = listing[0]
    assert (listed.name, listed.uuid, listed.compute_capability) == (
        "NVIDIA H200", "GPU-dbfacfd7-d6a2-264a-8322-d32d09e00e90", "9.0",
    )  # fmt: skip


def test_the_plan_builds_for_sm_90_with_the_flags_that_ran_on_the_h200() -> None:
    facts = h200_facts()
    plan = plan_host(facts, validate({}), ModelInfo("bench-gemma3-8x2048", 1138723136))
    assert (plan.backend, plan.cuda_architectures, plan.cmake_flags) == ("cuda", ("90",), BUILT_WITH)
    assert (plan.n_gpu_layers, plan.log_verbosity, plan.threads) == (999, 4, 16)
    assert plan.run_env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert set(plan.device_nodes) == {"/dev/nvidiactl", "char-nvidia-uvm", "/dev/nvidia0"}
    assert "targets: CMAKE_CUDA_ARCHITECTURES=90" in plan.reasons["backend"]
    assert not plan.warnings
    source = Source("pypi-sdist", "llama-cpp-python-0.3.36-832db0699007")
    # The id the H200 computed for itself, from its own probes, in bench/device_h200.sh's second run: the
    # controller's plan of the recordings and the machine's own agree. (A new source pin or base flags change it.)
    assert build_id(source, plan) == "b0e17c792b8caadc"


def gate_lines(log: str) -> str:
    """The lines of the server's log the gate reads (it greps the journal for LOAD_LINES)."""
    return "\n".join(line for line in log.splitlines() if re.search(LOAD_LINES, line))


def test_the_gate_offload_check_passes_on_the_h200_servers_log() -> None:
    lines = gate_lines(SERVER_LOG.read_text())
    assert "offloaded 9/9 layers to GPU" in lines and "CUDA0 model buffer size =  1085.27 MiB" in lines
    assert offload_problem(lines, "cuda", 999) is None


def test_the_same_log_with_the_weights_left_on_the_cpu_fails_the_check() -> None:
    """The real log edited to what a CPU-only start prints: the check that passed above can fail."""
    log = SERVER_LOG.read_text().replace("offloaded 9/9 layers", "offloaded 0/9 layers")
    problem = offload_problem(gate_lines(log), "cuda", 999)
    assert problem and problem.startswith("no GPU computed: 0/9 layers were offloaded to the GPU (cuda planned 999)")
    no_cuda = re.sub(r"^.*CUDA0 model buffer size.*\n", "", SERVER_LOG.read_text(), flags=re.MULTILINE)
    assert "host memory only (CPU_Mapped 125 MiB)" in (offload_problem(gate_lines(no_cuda), "cuda", 999) or "")
