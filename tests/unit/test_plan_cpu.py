"""The CPU plan, from facts recorded on a real host, and the settings it is validated against."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lemfleet.roles.detect import facts_from_sections
from lemfleet.roles.facts.host import split_sections
from lemfleet.roles.plan import GIB, ModelInfo, plan_host
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "host" / "debian12-nspawn-probe.txt"
FACTS = facts_from_sections(split_sections(FIXTURE.read_text().splitlines()))
MODEL = ModelInfo(alias="LEM-Gemma3-1B", size_bytes=967_000_000)


def plan(facts=FACTS, **overrides):
    return plan_host(facts, validate(overrides), MODEL)


def test_cpu_host_gets_a_native_cpu_build_and_every_choice_has_a_reason():
    p = plan()
    assert p.backend == "cpu"
    assert "-DGGML_NATIVE=ON" in p.cmake_flags
    assert not any("GGML_HIP" in f or "GGML_CUDA" in f or "GGML_VULKAN" in f for f in p.cmake_flags)
    assert p.threads == 2 and "physical cores" in p.reasons["threads"]
    assert p.n_gpu_layers == 0
    assert (p.listen_host, p.port) == ("127.0.0.1", 8080)
    assert not p.needs_api_key
    for key in ("backend", "cmake_flags", "threads", "parallel", "ctx_size", "n_gpu_layers"):
        assert p.reasons[key], key


def test_context_and_slots_follow_memory():
    small = dataclasses.replace(FACTS, mem_total_bytes=2 * GIB, cpu_physical_cores=8)
    big = dataclasses.replace(FACTS, mem_total_bytes=64 * GIB, cpu_physical_cores=16)
    assert (plan(small).parallel, plan(small).ctx_size) == (1, 2048)
    assert (plan(big).parallel, plan(big).ctx_size) == (4, 4 * 4096)


def test_settings_override_the_automatic_choices():
    p = plan(server_threads=1, server_ctx_size=1024, server_parallel=3, server_port=9000)
    assert (p.threads, p.ctx_size, p.parallel, p.port) == (1, 1024, 3, 9000)
    assert p.reasons["ctx_size"] == "set by server_ctx_size"


@pytest.mark.parametrize(
    ("setting", "value", "fragment"),
    [
        ("server_port", 0, "server_port=0 is not valid; accepted: an integer from 1 to 65535"),
        ("server_port", 65536, "server_port=65536"),
        ("server_n_gpu_layers", -1, "server_n_gpu_layers=-1 is not valid"),
        ("model_quant", "Q9_K", "model_quant='Q9_K' is not a known quant; accepted: 'auto', "),
        ("llama_cpp_source", "svn", "accepted: 'pypi-sdist', 'git', 'tarball'"),
        ("llama_cpp_git_ref", "bad ref!", "llama_cpp_git_ref='bad ref!'"),
        ("model_sha256", "abc", "64 hexadecimal characters"),
        ("server_host", "0.0.0.0", "needs an API key"),
        ("apt_proxy", "ftp://x", "an http:// or https:// URL"),
    ],
)
def test_bad_settings_name_the_setting_the_value_and_what_is_accepted(setting, value, fragment):
    with pytest.raises(SettingsError) as err:
        validate({setting: value}, host="web1")
    assert fragment in str(err.value)
    assert "web1" in str(err.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(SettingsError) as err:
        validate({"server_port": "x", "model_keep": 0})
    assert len(err.value.problems) == 2
