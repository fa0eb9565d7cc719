"""The CPU rollout, end to end, on a real test-bed host: build, serve, smoke, and stay idempotent."""

from __future__ import annotations

import io
import json
import re
import tarfile
import time

import pytest
import testinfra

from lemfleet import testbed
from lemfleet.roles.llama_sources import file_sha256
from lemfleet.testbed.paths import SSH_CONFIG
from tests.testbed.conftest import PROJECT, deploy

UNIT = "lemfleet-llama.service"


def changed(run) -> int:
    return int(run.json["results"]["totals"]["success"])


def service(host) -> dict[str, str]:
    return host.service(UNIT).systemd_properties


def serving(rec) -> bool:
    return testbed.ssh(rec, "curl -sf http://127.0.0.1:8080/health", check=False).strip() == '{"status":"ok"}'


@pytest.fixture(scope="module")
def deployed(fleet):
    return fleet[0], None


@pytest.fixture(scope="module")
def tinfra(deployed):
    rec, _ = deployed
    return testinfra.get_host(f"ssh://{rec.name}", ssh_config=str(SSH_CONFIG))


def test_first_deploy_ends_with_a_passing_smoke_test(deployed):
    rec, _ = deployed
    result = json.loads((PROJECT / "out" / "smoke" / f"{rec.name}.json").read_text())
    assert result["ok"], result
    assert [(s["name"], s["status"]) for s in result["steps"]] == [
        ("health", "passed"),
        ("auth", "skipped"),  # loopback only, no key: nothing to refuse
        ("models", "passed"),
        ("chat", "passed"),
        ("stream", "passed"),
    ]
    assert result["model"] == "lemfleet-tiny-gemma3"  # the alias made from the file name
    assert result["time_to_first_token_s"] > 0 and result["decode_tokens_per_s"] > 0


def test_service_is_active_enabled_and_runs_as_its_user(tinfra):
    svc = tinfra.service(UNIT)
    assert svc.is_running and svc.is_enabled
    pid = service(tinfra)["MainPID"]
    assert tinfra.check_output(f"ps -o user= -p {pid}") == "lemfleet"
    assert tinfra.user("lemfleet").shell == "/usr/sbin/nologin"


def test_file_modes_and_owners(tinfra):
    unit = tinfra.file(f"/etc/systemd/system/{UNIT}")
    env = tinfra.file("/etc/lemfleet/lemfleet-llama.env")
    record = tinfra.file("/etc/lemfleet/deployed.json")
    for f in (unit, env, record):
        assert (f.user, f.group, f.mode) == ("root", "root", 0o644), f.path
    assert not tinfra.file("/etc/lemfleet/api-key").exists
    current = tinfra.file("/opt/lemfleet/llama.cpp/current")
    assert current.is_symlink
    binary = tinfra.file("/opt/lemfleet/llama.cpp/current/bin/llama-server")
    assert binary.mode == 0o755 and binary.user == "root"
    model = json.loads(record.content_string)["model"]
    assert tinfra.file(model["path"]).sha256sum == model["sha256"]


def test_listens_only_where_configured(tinfra):
    assert tinfra.socket("tcp://127.0.0.1:8080").is_listening
    assert not tinfra.socket("tcp://0.0.0.0:8080").is_listening
    assert not tinfra.socket("tcp://:::8080").is_listening
    listeners = tinfra.check_output("ss -Htln 'sport = :8080'")
    assert listeners.split()[3] == "127.0.0.1:8080", listeners


def test_unit_passes_systemd_analyze(tinfra):
    verify = tinfra.run(f"systemd-analyze verify /etc/systemd/system/{UNIT}")
    assert verify.rc == 0, verify.stderr
    security = tinfra.run(f"systemd-analyze security --no-pager {UNIT}")
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert found, security.stdout[-600:]
    exposure = float(found.group(1))
    assert exposure < 3.0, security.stdout[-600:]


def test_second_run_changes_nothing(deployed, tiny_model):
    rec, _ = deployed
    run = deploy(rec.name, "model_source=local", f"model_path={tiny_model}")
    assert run.returncode == 0, run.output[-3000:]
    assert changed(run) == 0, [o for o in run.json["results"]["operations"] if o["success"]]


def test_the_runtime_packages_stay_installed_on_purpose(deployed, tinfra, tiny_model):
    """libgomp1 counted as pulled in by another package (as gcc or libggml0 pull it in) is marked manual again,
    and nothing else changes: no autoremove can take what llama-server loads at its next start."""
    rec, _ = deployed
    assert tinfra.run("apt-mark showauto libgomp1").stdout.strip() == ""
    tinfra.run_expect([0], "apt-mark auto libgomp1")
    run = deploy(rec.name, "model_source=local", f"model_path={tiny_model}")
    assert run.returncode == 0, run.output[-3000:]
    names = [o["name"] for o in run.json["results"]["operations"] if o["success"]]
    assert len(names) == 1 and names[0].endswith("Keep the new state's runtime packages installed on purpose"), names
    assert tinfra.run("apt-mark showauto libgomp1").stdout.strip() == ""
    assert tinfra.package("libgomp1").is_installed


def test_a_flag_change_restarts_without_rebuilding(deployed, tinfra, tiny_model):
    rec, _ = deployed
    before = service(tinfra)
    build = tinfra.file("/opt/lemfleet/llama.cpp/current").linked_to
    run = deploy(rec.name, "model_source=local", f"model_path={tiny_model}", "server_ctx_size=1024")
    assert run.returncode == 0, run.output[-3000:]
    names = [o["name"] for o in run.json["results"]["operations"] if o["success"]]
    assert not any("Compile" in n for n in names), names
    assert any("Restart" in n for n in names), names
    assert service(tinfra)["MainPID"] != before["MainPID"]
    assert tinfra.file("/opt/lemfleet/llama.cpp/current").linked_to == build
    assert "LEMFLEET_CTX_SIZE=1024" in tinfra.file("/etc/lemfleet/lemfleet-llama.env").content_string
    # Put the default back for the tests that follow.
    assert deploy(rec.name, "model_source=local", f"model_path={tiny_model}").returncode == 0


def test_systemd_brings_a_killed_server_back(deployed, tinfra):
    rec, _ = deployed
    before = service(tinfra)
    tinfra.run(f"kill -9 {before['MainPID']}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = service(tinfra)
        if now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"]):
            break
        time.sleep(1)
    assert int(service(tinfra)["NRestarts"]) > int(before["NRestarts"])
    deadline = time.monotonic() + 60
    while not serving(rec) and time.monotonic() < deadline:
        time.sleep(1)
    assert serving(rec)


def test_a_bad_setting_fails_before_any_connection(deployed):
    rec, _ = deployed
    count = "journalctl -q -u ssh.service --no-pager | grep -c 'Accepted publickey'"
    before = int(testbed.ssh(rec, count))
    run = deploy(rec.name, "server_port=70000", timeout=120)
    after = int(testbed.ssh(rec, count))
    assert run.returncode != 0
    assert "server_port=70000 is not valid; accepted: an integer from 1 to 65535" in run.output
    assert after == before + 1  # only the ssh call above, none from pyinfra


def test_a_source_with_a_wrong_sha256_fails_and_the_old_build_keeps_serving(deployed, tinfra, tmp_path, tiny_model):
    rec, _ = deployed
    tarball = tmp_path / "llama.cpp-broken.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        data = b'cmake_minimum_required(VERSION 3.14)\nmessage(FATAL_ERROR "broken source tree")\n'
        info = tarfile.TarInfo("llama.cpp-broken/CMakeLists.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    before = service(tinfra)["MainPID"]
    wrong = deploy(
        rec.name,
        "model_source=local",
        f"model_path={tiny_model}",
        "llama_cpp_source=tarball",
        f"llama_cpp_tarball={tarball}",
        "llama_cpp_tarball_sha256=" + "ab" * 32,
        timeout=600,
    )
    assert wrong.returncode != 0
    assert "does not match" in wrong.output and file_sha256(tarball) in wrong.output
    assert serving(rec) and service(tinfra)["MainPID"] == before

    # A verified source that fails to compile fails the host with the build log's tail.
    broken = deploy(
        rec.name,
        "model_source=local",
        f"model_path={tiny_model}",
        "llama_cpp_source=tarball",
        f"llama_cpp_tarball={tarball}",
        f"llama_cpp_tarball_sha256={file_sha256(tarball)}",
        timeout=600,
    )
    assert broken.returncode != 0
    assert "broken source tree" in broken.output
    assert "llama-server build" in broken.output and "failed; last lines of" in broken.output
    assert serving(rec) and service(tinfra)["MainPID"] == before
