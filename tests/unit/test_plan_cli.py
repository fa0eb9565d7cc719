"""``lemfleet plan``: its errors before any host is contacted, and the table on GPU fixture hosts.

GPU rows come from the recorded outputs in ``tests/fixtures/gpu`` through the same row builder the
command uses. Real runs (``@local`` probed with the deploy's own facts, refused and silent SSH ports
standing in for hosts that are down) are in ``tests/integration/test_plan_cli_live.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lemfleet import plan_cli
from lemfleet.cli import main
from lemfleet.plan_cli import render_details, render_table
from lemfleet.plan_fleet import plan_row
from lemfleet.roles.settings_check import validate
from tests.fixtures.gpu.hosts import DEBIAN_12, DEBIAN_SID, UBUNTU_2404, scenario_host

GIB = 1024**3
KEYS = {
    "host", "ok", "errors", "hostname", "os", "arch", "cpu_physical_cores", "mem_total_bytes", "gpus", "model",
    "quant", "backend", "gpu_targets", "cuda_architectures", "cmake_flags", "threads", "ctx_size", "parallel",
    "n_gpu_layers", "flash_attn", "log_verbosity", "listen", "alias", "run_env", "tensor_split", "reasons", "warnings",
    "llama_cpp_source", "sources", "tls",
}  # fmt: skip
GPU_KEYS = {
    "index", "vendor", "name", "vram_bytes", "gfx_target", "compute_capability", "pci_slot", "integrated",
    "driver_ok", "chosen",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a directory of its own, as a user would, with no group_data/ around."""
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def table_rows(text: str) -> dict[str, list[str]]:
    """The table's cells by host (columns are at least two spaces apart)."""
    lines = text.split("\n\n", 1)[0].splitlines()
    assert re.split(r"\s{2,}", lines[0]) == list(plan_cli.COLUMNS)
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}


# -- errors before any host is contacted -------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan"], "give the inventory: lemfleet plan INVENTORY.py (or @local for this machine)"),
        (["plan", "/nonexistent/fleet.py"], "inventory file /nonexistent/fleet.py does not exist"),
        (["plan", "@local", "--data", "novalue"], "--data 'novalue' is not valid; accepted: KEY=VALUE"),
    ],
)
def test_setup_errors_exit_2(argv: list[str], message: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert f"lemfleet plan: error: {message}" in capfd.readouterr().err


def test_broken_inventory_file_exits_2_naming_it(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    inventory = write(tmp_path / "broken.py", "fleet = [undefined_name]\n")
    assert main(["plan", inventory]) == 2
    assert f"lemfleet plan: error: inventory {inventory}: NameError" in capfd.readouterr().err


# -- rows and table on GPU fixture hosts (pure) ----------------------------------------


def fixture_row(scenario: str, release: Any = UBUNTU_2404, **data: Any) -> dict[str, Any]:
    row = plan_row(scenario, scenario_host(scenario, release), validate(data))
    assert set(row) == KEYS and all(set(gpu) == GPU_KEYS for gpu in row["gpus"])
    json.dumps(row)  # plain JSON types only
    return row


def test_gpu_rows_render_name_count_vram_targets_and_flags() -> None:
    rows = [
        fixture_row("h100-x8"),
        fixture_row("mi250"),
        fixture_row("780m+rx7600s"),
        fixture_row("rx9070xt+igpu"),
        fixture_row("rx7900xtx", model_quant="auto"),
        fixture_row("cpu-only"),
    ]
    cells = table_rows(render_table(rows))
    h100 = ["NVIDIA H100 80GB HBM3 x8 (80 GiB)", "cuda", "sm 90", "Q4_K_M", "-ngl 999 -c 16384 -np 4 -t 16", "-"]
    h100 += ["pypi-sdist", "-"]  # SOURCE, and TLS: plain HTTP
    assert cells["h100-x8"][1:] == h100
    assert cells["mi250"][1:4] == ["AMD Instinct MI250 x2 (64 GiB)", "hip", "gfx90a"]
    assert cells["780m+rx7600s"][1] == (
        "AMD Radeon RX 7700S/7600/7600S/7600M XT/PRO W7600 x1 (VRAM ?); "
        "AMD Radeon 780M (Phoenix1) x1 (VRAM ?, iGPU, unused)"
    )
    assert cells["780m+rx7600s"][6] == "2"  # VRAM unknown; HIP_VISIBLE_DEVICES in PCI order until ROCm runs
    assert cells["rx9070xt+igpu"][1:4] == [
        "AMD Radeon RX 9070 XT x1 (16 GiB); AMD Radeon Graphics x1 (15 GiB, iGPU, unused)",
        "hip",
        "gfx1201",
    ]
    assert cells["rx7900xtx"][4] == "auto (budget 24.0 GiB)"
    assert cells["cpu-only"][1:4] == ["-", "cpu", "-"]
    by_host = {row["host"]: row for row in rows}
    assert by_host["mi250"]["tensor_split"] == [0.5, 0.5]
    assert [gpu["chosen"] for gpu in by_host["rx9070xt+igpu"]["gpus"]] == [True, False]
    auto = by_host["rx7900xtx"]["quant"]
    assert auto["budget_bytes"] == by_host["rx7900xtx"]["gpus"][0]["vram_bytes"]
    assert auto["reserve_bytes"] == 512 * 2**20
    assert "(VRAM of the chosen GPUs)" in auto["note"]


def test_gpu_host_that_would_end_on_the_cpu_is_an_error_row_unless_allowed() -> None:
    refused = fixture_row("rx6700xt", DEBIAN_12)
    assert not refused["ok"] and refused["backend"] is None and refused["quant"] is None
    [error] = refused["errors"]
    assert "Set gpu_allow_cpu_fallback: true to accept the CPU" in error
    allowed = fixture_row("rx6700xt", DEBIAN_12, gpu_allow_cpu_fallback=True)
    assert allowed["ok"] and allowed["backend"] == "cpu"
    cells = table_rows(render_table([refused | {"host": "refused"}, allowed | {"host": "allowed"}]))
    assert cells["refused"][1:] == ["AMD Radeon RX 6700 XT x1 (12 GiB)", "ERROR", "-", "-", "-", "-", "-", "-"]
    assert cells["allowed"][1:3] == ["AMD Radeon RX 6700 XT x1 (12 GiB, unused)", "cpu"]
    assert cells["allowed"][6] == "1"
    details = render_details([refused | {"host": "refused"}, allowed | {"host": "allowed"}])
    assert f"refused (rx6700xt-debian12, debian 12 (bookworm), x86_64): no plan\n  error: {error}" in details
    assert "allowed (rx6700xt-debian12, debian 12 (bookworm), x86_64): cpu\n  backend: detected:" in details
    assert "  warning: 1 GPU(s) detected but serving on the CPU" in details
    assert details.endswith("2 host(s): 1 planned, 1 with errors")


def test_every_key_is_documented() -> None:
    assert plan_cli.__doc__ is not None
    for key in KEYS | GPU_KEYS:
        assert re.search(rf"\b{key}\b", plan_cli.__doc__), key


def test_rows_show_what_each_llama_cpp_source_would_give() -> None:
    compiled = fixture_row("rx7900xtx", DEBIAN_SID)
    assert compiled["llama_cpp_source"] == "pypi-sdist"
    assert compiled["sources"]["distro"]["available"] and compiled["sources"]["distro"]["targets"] == ["gfx1100"]
    assert compiled["sources"]["compile"]["seconds_to_serving"] > compiled["sources"]["distro"]["seconds_to_serving"]
    distro = fixture_row("rx7900xtx", DEBIAN_SID, llama_cpp_source="distro")
    assert distro["ok"] and distro["llama_cpp_source"] == "distro"
    assert "libggml0-backend-hip 0.27.0-1" in render_details([distro])
    cells = table_rows(render_table([compiled | {"host": "compiled"}, distro | {"host": "distro"}]))
    assert (cells["compiled"][7], cells["distro"][7]) == ("pypi-sdist (distro too)", "distro")


def test_distro_on_a_gfx_debian_does_not_build_for_is_an_error_row_that_still_shows_the_sources() -> None:
    row = fixture_row("mi300x", DEBIAN_SID, llama_cpp_source="distro")
    assert not row["ok"] and row["backend"] == "hip" and row["gpu_targets"] == ["gfx942"]
    [error] = row["errors"]
    assert "no offload code for gfx942" in error and "Sources that would work: 'pypi-sdist'" in error
    assert row["sources"]["distro"]["missing_targets"] == ["gfx942"] and row["sources"]["compile"]["available"]
    assert "  source distro: not available:" in render_details([row])
    auto = fixture_row("mi300x", DEBIAN_SID, llama_cpp_source="auto")
    assert auto["ok"] and auto["llama_cpp_source"] == "pypi-sdist"
