"""The per-host transaction on real test-bed hosts: a new state that fails the health gate never stays.

tb2 serves the tiny model (``fleet``); each test starts from that state and
leaves the host in it. A first deploy gets a host of its own, removed after.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.roles.llama_sources import file_sha256
from lemfleet.testbed.hosts import HostRecord
from tests.testbed.conftest import PyinfraRun, deploy

UNIT = "lemfleet-llama.service"
GOOD = "/var/lib/lemfleet/last-good"


def on_host(rec: HostRecord, command: str) -> str:
    return testbed.ssh(rec, command, check=False, timeout=120).strip()


def record(rec: HostRecord) -> dict:
    return json.loads(on_host(rec, "cat /etc/lemfleet/deployed.json") or "{}")


def unit_state(rec: HostRecord) -> dict[str, str]:
    out = on_host(rec, f"systemctl show -p ActiveState -p UnitFileState -p NRestarts -p MainPID {UNIT}")
    return dict(line.split("=", 1) for line in out.splitlines())


def chat_answers(rec: HostRecord) -> bool:
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    out = on_host(rec, f"curl -sf -H 'Content-Type: application/json' -d '{body}' "
                       "http://127.0.0.1:8080/v1/chat/completions")  # fmt: skip
    return bool(out) and bool(json.loads(out)["choices"][0]["message"]["content"])


def broken_model(path: Path) -> Path:
    """A file that passes its sha256 check (the controller hashes it) but is not a loadable GGUF."""
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + os.urandom(64 * 1024))
    return path


def local(model: Path, *data: str) -> list[str]:
    return ["model_source=local", f"model_path={model}", *data]


def changed(run: PyinfraRun) -> int:
    return int(run.json["results"]["totals"]["success"])


def assert_rolled_back(run: PyinfraRun, rec: HostRecord, good_sha: str, journal_hint: str) -> None:
    assert run.returncode != 0, run.output[-3000:]
    assert "rolled back: " in run.output and "the last good state serves again" in run.output, run.output[-4000:]
    assert "journal of the failed start:" in run.output and journal_hint in run.output, run.output[-4000:]
    assert "Secsh channel" not in run.output
    assert record(rec)["model"]["sha256"] == good_sha
    assert chat_answers(rec)
    restarts = unit_state(rec)["NRestarts"]
    time.sleep(8)  # RestartSec=2: a crash loop would have restarted it by now
    assert unit_state(rec)["NRestarts"] == restarts and unit_state(rec)["ActiveState"] == "active"


@pytest.fixture(scope="module")
def serving(fleet: list[HostRecord], tiny_model: Path) -> Iterator[HostRecord]:
    rec = fleet[1]
    run = deploy(rec.name, *local(tiny_model))
    assert run.returncode == 0, run.output[-3000:]
    yield rec
    assert deploy(rec.name, *local(tiny_model)).returncode == 0


def test_a_model_that_does_not_load_is_rolled_back(serving: HostRecord, tiny_model: Path, tmp_path: Path) -> None:
    good_sha = record(serving)["model"]["sha256"]
    assert good_sha == file_sha256(tiny_model)
    builds_before = on_host(serving, "ls -1 /opt/lemfleet/llama.cpp")
    bad = broken_model(tmp_path / "broken-Q4_K_M.gguf")
    run = deploy(serving.name, *local(bad))
    assert_rolled_back(run, serving, good_sha, "llama_model_load")
    # Nothing was pruned: the candidate's model is kept for diagnosis, the builds are as they were.
    assert on_host(serving, f"ls /var/lib/lemfleet/models/ | grep -c '^{file_sha256(bad)[:12]}.*gguf$'") == "1"
    assert on_host(serving, "ls -1 /opt/lemfleet/llama.cpp") == builds_before

    # The last good state is what serves again, so the same deploy of it changes nothing.
    rerun = deploy(serving.name, *local(tiny_model))
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert changed(rerun) == 0, [o["name"] for o in rerun.json["results"]["operations"] if o["success"]]


def test_an_argument_llama_server_rejects_is_rolled_back(serving: HostRecord, tiny_model: Path) -> None:
    good_sha = record(serving)["model"]["sha256"]
    env_before = on_host(serving, "cat /etc/lemfleet/lemfleet-llama.env")
    run = deploy(serving.name, *local(tiny_model, 'server_extra_args=["--no-such-llama-flag"]'))
    assert_rolled_back(run, serving, good_sha, "--no-such-llama-flag")
    assert on_host(serving, "cat /etc/lemfleet/lemfleet-llama.env") == env_before


def test_a_host_of_an_earlier_lemfleet_is_adopted(serving: HostRecord, tiny_model: Path, tmp_path: Path) -> None:
    """A deployed.json without schema_version and no last good state: the serving state is taken as good."""
    old = record(serving)
    old.pop("schema_version")
    old.pop("gate")
    old["record_version"] = 1
    v1 = json.dumps(old, indent=2, sort_keys=True)
    on_host(serving, f"rm -rf {GOOD} && cat > /etc/lemfleet/deployed.json <<'EOF'\n{v1}\nEOF")
    run = deploy(serving.name, *local(broken_model(tmp_path / "broken-Q8_0.gguf")))
    assert_rolled_back(run, serving, old["model"]["sha256"], "llama_model_load")
    assert record(serving) == old  # put back exactly as the earlier lemfleet wrote it
    assert on_host(serving, f"cat {GOOD}/digest") == "adopted"

    upgraded = deploy(serving.name, *local(tiny_model))
    assert upgraded.returncode == 0, upgraded.output[-3000:]
    assert record(serving)["schema_version"] == 2 and "record_version" not in record(serving)
    assert on_host(serving, f"cat {GOOD}/digest") != "adopted"


def test_a_first_deploy_that_fails_the_gate_stops_and_disables_the_unit(bed: list[HostRecord], tmp_path: Path) -> None:
    (fresh,) = testbed.add(1)
    try:
        bad = broken_model(tmp_path / "broken-first-Q4_K_M.gguf")
        run = deploy(fresh.name, *local(bad))
        assert run.returncode != 0
        assert "there is no last good state to go back to" in run.output, run.output[-4000:]
        assert "journal of the failed start:" in run.output and "llama_model_load" in run.output
        assert "Secsh channel" not in run.output
        state = unit_state(fresh)
        assert state["ActiveState"] in ("inactive", "failed") and state["UnitFileState"] == "disabled", state
        time.sleep(5)
        assert unit_state(fresh)["NRestarts"] == state["NRestarts"]
        # The files stay for diagnosis; nothing claims the state was good.
        assert on_host(fresh, f"test -f /etc/systemd/system/{UNIT} && ls /var/lib/lemfleet/models/ | grep -c broken")
        assert on_host(fresh, "test -e /etc/lemfleet/deployed.json || echo none") == "none"
        assert on_host(fresh, f"test -e {GOOD} || echo none") == "none"
    finally:
        testbed.remove(fresh.name)


def test_lemfleet_rollback_puts_the_previous_model_back_through_the_gate(
    serving: HostRecord, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Model A serves, model B is deployed; ``lemfleet rollback`` serves A again, and a second one B."""
    from lemfleet.cli import main
    from lemfleet.demo import vocab_path
    from lemfleet.testbed.tinygguf import write_tiny_gemma3

    sha_a = record(serving)["model"]["sha256"]
    model_b = write_tiny_gemma3(tmp_path / "LEM-Gemma3-tiny-b-Q8_0.gguf", vocab_gguf=vocab_path(), seed=1)
    sha_b = file_sha256(model_b)
    run = deploy(serving.name, *local(model_b))
    assert run.returncode == 0, run.output[-3000:]
    assert record(serving)["model"]["sha256"] == sha_b
    records = tmp_path / "rollouts"
    argv = ["rollback", "inventories/testbed.py", "--limit", serving.name, "--records", str(records), "--quiet"]

    assert main([*argv, "--dry"]) == 0
    assert f"{serving.name}: would roll back: " in capsys.readouterr().out
    assert record(serving)["model"]["sha256"] == sha_b  # --dry changes nothing

    assert main(argv) == 0, capsys.readouterr()
    assert record(serving)["model"]["sha256"] == sha_a
    assert chat_answers(serving) and unit_state(serving)["ActiveState"] == "active"
    (path,) = records.glob("*.json")
    document = json.loads(path.read_text())
    assert document["kind"] == "rollback" and document["status"] == "completed"
    (result,) = document["batches"][0]["results"]
    assert result["outcome"] == "rolled back to previous"
    assert (result["before"]["model_sha256"], result["after"]["model_sha256"]) == (sha_b, sha_a)
    assert {s["name"]: s["status"] for s in result["gate"]}["chat"] == "passed"
    # B is the previous state now: its model file is kept for the next rollback.
    assert on_host(serving, f"ls /var/lib/lemfleet/models/ | grep -c '^{sha_b[:12]}.*gguf$'") == "1"

    # The two states swapped: a second rollback goes forward to B.
    assert main(argv) == 0, capsys.readouterr()
    assert record(serving)["model"]["sha256"] == sha_b and chat_answers(serving)

    # A host with no previous state is a clear error of its own, and is not touched.
    on_host(serving, "mv /var/lib/lemfleet/previous /var/lib/lemfleet/previous.test")
    try:
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"{serving.name}: no previous state to roll back to" in err, err
        assert record(serving)["model"]["sha256"] == sha_b and chat_answers(serving)
    finally:
        on_host(serving, "mv /var/lib/lemfleet/previous.test /var/lib/lemfleet/previous")
