"""``lemfleet plan``: real runs against ``@local`` and unreachable SSH hosts, and the table on GPU fixture hosts.

The command runs for real: pyinfra's loader reads inventory files written here, ``@local`` is
probed with the deploy's own facts (this machine has no GPU, so its plan is cpu), refused and
silent SSH ports stand in for hosts that are down. GPU rows come from the recorded outputs in
``tests/fixtures/gpu`` through the same row builder the command uses.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
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
    "llama_cpp_source", "sources",
}  # fmt: skip
GPU_KEYS = {
    "index", "vendor", "name", "vram_bytes", "gfx_target", "compute_capability", "pci_slot", "integrated",
    "driver_ok", "chosen",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a directory of its own, as a user would, with no group_data/ around."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def silent_port() -> Iterator[tuple[int, socket.socket]]:
    """A port that accepts TCP connections and never says a word (a wedged sshd)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1], listener


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def table_rows(text: str) -> dict[str, list[str]]:
    """The table's cells by host (columns are at least two spaces apart)."""
    lines = text.split("\n\n", 1)[0].splitlines()
    assert re.split(r"\s{2,}", lines[0]) == list(plan_cli.COLUMNS)
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}


def meminfo_total() -> int:
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal:"))
    return int(line.split()[1]) * 1024


# -- live runs -----------------------------------------------------------------------


def test_local_host_is_planned_from_its_own_facts(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    inventory = write(tmp_path / "local.py", 'local = ["@local"]\n')
    out = tmp_path / "plan.json"
    assert main(["plan", inventory, "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())
    assert set(row) == KEYS and row["host"] == "@local" and row["ok"] and row["errors"] == []
    assert row["hostname"] == socket.gethostname()
    assert row["mem_total_bytes"] == meminfo_total()
    assert row["threads"] == row["cpu_physical_cores"] >= 1
    assert row["model"] == {"source": "hub", "alias": "LEM-Gemma3-1B", "file": None, "size_bytes": 0}
    assert row["quant"]["value"] == "Q4_K_M" and row["quant"]["from"] == "model_quant"
    # The development and CI machines have no GPU: the plan says cpu, and why.
    assert row["gpus"] == []
    assert row["backend"] == "cpu" and row["n_gpu_layers"] == 0
    assert row["reasons"]["backend"] == "detected: no AMD or NVIDIA GPU; backend: cpu, no GPU to serve on"
    assert "-DGGML_NATIVE=ON" in row["cmake_flags"] and row["listen"] == "127.0.0.1:8080"
    printed = capfd.readouterr().out
    cells = table_rows(printed)["@local"]
    flags = f"-ngl 0 -c {row['ctx_size']} -np {row['parallel']} -t {row['threads']}"
    assert cells[1:] == ["-", "cpu", "-", "Q4_K_M", flags, "-", "pypi-sdist"]
    assert "  backend: detected: no AMD or NVIDIA GPU" in printed
    assert printed.rstrip().endswith("1 host(s): 1 planned, 0 with errors")


def test_data_overrides_apply_as_in_pyinfra(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    inventory = write(tmp_path / "local.py", 'local = [("@local", {"server_threads": 3})]\n')
    argv = ["plan", inventory, "--data", "server_threads=1", "--data", "model_quant=auto", "--json", "-"]
    assert main(argv) == 0
    [row] = json.loads(capfd.readouterr().out)  # --json - prints nothing but the JSON
    assert row["threads"] == 1 and row["reasons"]["threads"] == "set by server_threads"
    # quant=auto on a cpu plan: the budget is the host's RAM, less 1 GiB for the context.
    assert row["quant"]["value"] == "auto"
    assert row["quant"]["budget_bytes"] == row["mem_total_bytes"] == meminfo_total()
    assert row["quant"]["reserve_bytes"] == GIB
    assert "resolved at deploy time" in row["quant"]["note"] and "(RAM)" in row["quant"]["note"]


def test_local_model_file_is_stat_not_downloaded(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "tiny-Q8_0.gguf"
    model.write_bytes(b"GGUF" + bytes(1230))
    inventory = write(tmp_path / "local.py", 'local = ["@local"]\n')
    argv = ["plan", inventory, "--data", "model_source=local", "--data", f"model_path={model}"]
    assert main(argv) == 0
    cells = table_rows(capfd.readouterr().out)["@local"]
    assert cells[4] == "Q8_0"
    assert main([*argv, "--json", "-"]) == 0
    [row] = json.loads(capfd.readouterr().out)
    assert row["model"] == {"source": "local", "alias": "tiny", "file": model.name, "size_bytes": 1234}
    assert row["quant"] == {
        "value": "Q8_0",
        "from": "model_path",
        "budget_bytes": None,
        "reserve_bytes": None,
        "note": f"Q8_0, from model_path={model.name}",
    }
    assert row["alias"] == "tiny"


def test_bad_setting_exits_2_before_any_host_is_contacted(
    tmp_path: Path, silent_port: tuple[int, socket.socket], capfd: pytest.CaptureFixture[str]
) -> None:
    port, listener = silent_port
    host = f'("watched", {{"ssh_hostname": "127.0.0.1", "ssh_port": {port}}})'
    inventory = write(tmp_path / "fleet.py", f"fleet = [{host}]\n")
    assert main(["plan", inventory, "--data", "gpu_backend=rocm"]) == 2
    err = capfd.readouterr().err
    assert "lemfleet plan: error: invalid lemfleet settings for host watched:" in err
    assert "gpu_backend='rocm' is not valid; accepted: 'auto', 'hip', 'cuda', 'vulkan', 'cpu'" in err
    assert "No host was contacted." in err
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever connected


def test_unreachable_hosts_are_error_rows_and_exit_1(
    tmp_path: Path, silent_port: tuple[int, socket.socket], capfd: pytest.CaptureFixture[str]
) -> None:
    port, _ = silent_port
    silent = [f"silent{i}" for i in range(4)]
    inventory = write(
        tmp_path / "fleet.py",
        'local = ["@local"]\n'
        'down = [("refused", {"ssh_hostname": "127.0.0.1", "ssh_port": 1, "ssh_connect_retries": 0})]\n'
        f"silent = [(name, {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}}}) for name in {silent!r}]\n",
    )
    out = tmp_path / "plan.json"
    started = time.monotonic()
    assert main(["plan", inventory, "--connect-timeout", "2", "--json", str(out)]) == 1
    # Each silent host is given up after the 2 s connect timeout, all at once: one after the
    # other would take 8 s.
    assert time.monotonic() - started < 8
    rows = {row["host"]: row for row in json.loads(out.read_text())}
    assert list(rows) == ["@local", "refused", *silent]
    assert rows["@local"]["ok"] and rows["@local"]["backend"] == "cpu"
    for name in ("refused", *silent):
        row = rows[name]
        assert set(row) == KEYS and not row["ok"] and row["backend"] is None and row["gpus"] == []
        [error] = row["errors"]
        assert error.startswith("cannot reach the host: ")
    assert "Unable to connect to port 1 on 127.0.0.1" in rows["refused"]["errors"][0]
    printed = capfd.readouterr().out
    cells = table_rows(printed)
    assert {cells[name][2] for name in ("refused", *silent)} == {"ERROR"}
    assert "refused: no plan\n  error: cannot reach the host: Could not connect" in printed
    assert printed.rstrip().endswith("6 host(s): 1 planned, 5 with errors")


def test_limit_takes_groups_and_globs_and_skips_the_rest(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    inventory = write(
        tmp_path / "fleet.py",
        'local = ["@local"]\ndown = [("refused", {"ssh_hostname": "127.0.0.1", "ssh_port": 1})]\n',
    )
    assert main(["plan", inventory, "--limit", "local", "--json", "-"]) == 0
    assert [row["host"] for row in json.loads(capfd.readouterr().out)] == ["@local"]
    assert main(["plan", inventory, "--limit", "ref*", "--json", "-"]) == 1
    assert [row["host"] for row in json.loads(capfd.readouterr().out)] == ["refused"]
    assert main(["plan", inventory, "--limit", "gpu"]) == 2
    assert "--limit 'gpu' matches no group or host in the inventory" in capfd.readouterr().err


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
    h100.append("pypi-sdist")
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
    assert cells["refused"][1:] == ["AMD Radeon RX 6700 XT x1 (12 GiB)", "ERROR", "-", "-", "-", "-", "-"]
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
    assert (cells["compiled"][-1], cells["distro"][-1]) == ("pypi-sdist (distro too)", "distro")


def test_distro_on_a_gfx_debian_does_not_build_for_is_an_error_row_that_still_shows_the_sources() -> None:
    row = fixture_row("mi300x", DEBIAN_SID, llama_cpp_source="distro")
    assert not row["ok"] and row["backend"] == "hip" and row["gpu_targets"] == ["gfx942"]
    [error] = row["errors"]
    assert "no offload code for gfx942" in error and "Sources that would work: 'pypi-sdist'" in error
    assert row["sources"]["distro"]["missing_targets"] == ["gfx942"] and row["sources"]["compile"]["available"]
    assert "  source distro: not available:" in render_details([row])
    auto = fixture_row("mi300x", DEBIAN_SID, llama_cpp_source="auto")
    assert auto["ok"] and auto["llama_cpp_source"] == "pypi-sdist"
