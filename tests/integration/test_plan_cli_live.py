"""``lemfleet plan`` run for real: ``@local`` and unreachable SSH hosts.

pyinfra's loader reads inventory files written here; ``@local`` is probed with the deploy's own facts
(the CI and development machines have no GPU, so its plan is cpu); refused and silent SSH ports on
loopback stand in for hosts that are down.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet.cli import main
from tests.unit.test_plan_cli import GIB, KEYS, table_rows, write


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


def meminfo_total() -> int:
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal:"))
    return int(line.split()[1]) * 1024


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
    assert cells[1:] == ["-", "cpu", "-", "Q4_K_M", flags, "-", "pypi-sdist", "-"]  # TLS: plain HTTP
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
    silent = [f"silent{i}" for i in range(12)]
    inventory = write(
        tmp_path / "fleet.py",
        'local = ["@local"]\n'
        'down = [("refused", {"ssh_hostname": "127.0.0.1", "ssh_port": 1, "ssh_connect_retries": 0})]\n'
        f"silent = [(name, {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}}}) for name in {silent!r}]\n",
    )
    out = tmp_path / "plan.json"
    started = time.monotonic()
    assert main(["plan", inventory, "--connect-timeout", "2", "--json", str(out)]) == 1
    # Each silent host is given up after the 2 s connect timeout, all at once. One after the other
    # would wait 2 s per host, 24 s at least: a bound on the order, not a speed target.
    elapsed = time.monotonic() - started
    assert elapsed < 2 * len(silent), f"the {len(silent)} silent hosts took {elapsed:.1f} s: connected one by one?"
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
    assert printed.rstrip().endswith(f"{len(silent) + 2} host(s): 1 planned, {len(silent) + 1} with errors")


def test_limit_takes_groups_and_globs_and_skips_the_rest(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    inventory = write(
        tmp_path / "fleet.py",
        'local = ["@local"]\n'
        'down = [("refused", {"ssh_hostname": "127.0.0.1", "ssh_port": 1, "ssh_connect_retries": 0})]\n',
    )
    assert main(["plan", inventory, "--limit", "local", "--json", "-"]) == 0
    assert [row["host"] for row in json.loads(capfd.readouterr().out)] == ["@local"]
    assert main(["plan", inventory, "--limit", "ref*", "--json", "-"]) == 1
    assert [row["host"] for row in json.loads(capfd.readouterr().out)] == ["refused"]
    assert main(["plan", inventory, "--limit", "gpu"]) == 2
    assert "--limit 'gpu' matches no group or host in the inventory" in capfd.readouterr().err
