"""The rendered unit and environment file, checked by systemd itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lemfleet.roles.detect import facts_from_sections
from lemfleet.roles.facts.host import split_sections
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.server import render_env, render_unit
from lemfleet.roles.settings_check import validate
from tests.unit.systemd_syntax import parse_env_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "host" / "debian12-nspawn-probe.txt"
FACTS = facts_from_sections(split_sections(FIXTURE.read_text().splitlines()))


def plan(**overrides):
    return plan_host(FACTS, validate(overrides), ModelInfo("tiny", 5_000_000))


def unit(p, binary="/opt/lemfleet/llama.cpp/current/bin/llama-server", key=None):
    return render_unit(p, unit_name="lemfleet-llama", user="lemfleet", binary=binary, api_key_file=key)


def test_unit_is_sandboxed_and_restarts_on_failure():
    text = unit(plan())
    for line in (
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
        "PrivateDevices=yes",
        "User=lemfleet",
    ):
        assert line in text, line
    assert "DeviceAllow" not in text
    assert "--api-key-file" not in text
    assert "--metrics" in text


def test_env_file_carries_the_planned_flags():
    p = plan(server_ctx_size=1024, server_parallel=2)
    env = render_env(p, unit_name="lemfleet-llama", model_path="/var/lib/lemfleet/models/m.gguf", extra_args=[])
    values = parse_env_file(env)
    assert values["LEMFLEET_HOST"] == "127.0.0.1"
    assert values["LEMFLEET_PORT"] == "8080"
    assert values["LEMFLEET_ALIAS"] == "tiny"
    assert values["LEMFLEET_CTX_SIZE"] == "1024"
    assert values["LEMFLEET_PARALLEL"] == "2"
    assert values["LEMFLEET_THREADS"] == "2"
    assert values["LEMFLEET_N_GPU_LAYERS"] == "0"


def test_api_key_goes_by_file_never_in_the_unit_or_env():
    p = plan(server_host="0.0.0.0", server_api_key="not-in-any-file-0123")
    text = unit(p, key="/etc/lemfleet/api-key")
    env = render_env(p, unit_name="lemfleet-llama", model_path="/m.gguf", extra_args=[])
    assert '--api-key-file "/etc/lemfleet/api-key"' in text
    assert "not-in-any-file-0123" not in text + env


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    path = tmp_path / "lemfleet-llama.service"
    path.write_text(unit(plan(), binary=str(binary)))
    proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False)
    problems = [
        line
        for line in proc.stderr.splitlines()
        # The controller's own units are not what is tested here.
        if str(path) in line or "lemfleet-llama" in line
    ]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_offload_check_catches_a_silent_cpu_run():
    from lemfleet.roles.smoke import offload_problem

    full = "load_tensors: offloaded 27/27 layers to GPU"
    assert offload_problem(full, "cuda", 999) is None
    assert offload_problem("load_tensors: offloaded 0/27 layers to GPU", "vulkan", 999) == (
        "no GPU computed: 0/27 layers were offloaded to the GPU (vulkan planned 999)"
    )
    assert offload_problem("load_tensors: offloaded 12/27 layers to GPU", "cuda", 999) == (
        "only 12/27 layers were offloaded to the GPU (cuda planned 999)"
    )
    assert offload_problem("", "hip", 999) is None  # no evidence either way: the caller warns
    assert offload_problem("load_tensors: offloaded 10/27 layers to GPU", "cuda", 10) is None
    assert offload_problem("", "cpu", 0) is None


def test_offload_check_reads_where_the_weights_were_loaded():
    from lemfleet.roles.smoke import offload_problem

    # Lines as llama.cpp's load_tensors prints them ("%12s model buffer size = %8.2f MiB").
    on_gpu = (
        "load_tensors: offloaded 27/27 layers to GPU\n"
        "load_tensors:        CUDA0 model buffer size =   762.81 MiB\n"
        "load_tensors:   CPU_Mapped model buffer size =   306.00 MiB\n"
    )
    assert offload_problem(on_gpu, "cuda", 999) is None
    assert offload_problem(on_gpu.replace("CUDA0", "ROCm0"), "hip", 999) is None
    on_cpu = "load_tensors:   CPU_Mapped model buffer size =  1068.81 MiB\n"
    assert offload_problem(on_cpu, "vulkan", 999) == (
        "no GPU computed: the model's weights were loaded into host memory only (CPU_Mapped 1069 MiB), "
        "not the vulkan GPU's"
    )
    # With no device the server warns when it reads -ngl (common/arg.cpp), and the reason quotes it.
    said = "warning: no usable GPU found, --gpu-layers option will be ignored\n" + on_cpu
    assert offload_problem(said, "cuda", 999) == (
        "no GPU computed: the model's weights were loaded into host memory only (CPU_Mapped 1069 MiB), "
        "not the cuda GPU's; the server said: 'no usable GPU found, --gpu-layers option will be ignored'"
    )
    pinned_host = "load_tensors:    CUDA_Host model buffer size =   306.00 MiB\n"
    assert offload_problem(pinned_host, "cuda", 999) is not None  # pinned host memory is not the GPU's
    assert offload_problem(on_cpu, "cpu", 0) is None


def test_offload_check_does_not_take_vulkan_on_the_cpu_for_a_gpu():
    from lemfleet.roles.smoke import offload_problem

    # ggml_vk_print_gpu_info's line for Mesa's lavapipe (llvmpipe), chosen with GGML_VK_VISIBLE_DEVICES.
    lavapipe = (
        "ggml_vulkan: 0 = llvmpipe (LLVM 19.1.7, 256 bits) (llvmpipe) | uma: 1 | fp16: 1 | bf16: 0 | fp4: 0 | "
        "warp size: 8 | shared memory: 32768 | int dot: 0 | matrix cores: none\n"
        "load_tensors: offloaded 27/27 layers to GPU\n"
        "load_tensors:      Vulkan0 model buffer size =   762.81 MiB\n"
    )
    assert offload_problem(lavapipe, "vulkan", 999) == (
        "no GPU computed: the weights went to Vulkan on the CPU (Vulkan0 is llvmpipe (LLVM 19.1.7, 256 bits) "
        "(llvmpipe)), not a GPU"
    )
    radv = lavapipe.replace(
        "llvmpipe (LLVM 19.1.7, 256 bits) (llvmpipe)", "AMD Radeon RX 7900 XTX (RADV NAVI31) (radv)"
    )
    assert offload_problem(radv, "vulkan", 999) is None
