"""server_instances on a real test-bed host: two CPU replicas on two ports, then back to one with nothing stale.

tb2 serves the tiny model (``fleet``). The test deploys it with ``server_instances=2``, exposed with a
key so that the controller can send OpenAI chats to both ports, runs the shipped verify suite against it,
switches back to ``one`` and checks that the second unit, its files and its port are gone; the fixture
leaves the host on the default deploy.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lemfleet import api, testbed
from lemfleet.roles.detect import TARGET_PATHS, facts_from_sections
from lemfleet.roles.facts.gpu import PROBE_COMMAND, parse_probe
from lemfleet.roles.facts.host import probe_command, split_sections
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.server import render_dropin, render_env, render_unit
from lemfleet.roles.server_units import instance_plan
from lemfleet.roles.settings_check import validate
from lemfleet.testbed.hosts import HostRecord
from tests.testbed.conftest import PROJECT, PyinfraRun, deploy
from tests.testbed.test_verify_suite import verify

KEY = "instances-test-client-key-0123456789"
UNIT = "lemfleet-llama"
GPU_UNIT = "lemfleet-gpu-test"


def on_host(rec: HostRecord, command: str) -> str:
    return testbed.ssh(rec, command, check=False, timeout=120).strip()


def record(rec: HostRecord) -> dict:
    return json.loads(on_host(rec, "cat /etc/lemfleet/deployed.json") or "{}")


def listening(rec: HostRecord, port: int) -> bool:
    return bool(on_host(rec, f"ss -Htln 'sport = :{port}'"))


def chat(rec: HostRecord, port: int) -> str:
    reply = httpx.post(
        f"http://{rec.address}:{port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
        timeout=120,
    )
    assert reply.status_code == 200, f"port {port}: HTTP {reply.status_code}: {reply.text[:300]}"
    body = reply.json()
    assert body["usage"]["completion_tokens"] > 0, body
    return str(body["choices"][0]["message"]["content"])


def changed(run: PyinfraRun) -> list[str]:
    return [o["name"] for o in run.json["results"]["operations"] if o["success"]]


@pytest.fixture
def host(fleet: list[HostRecord], tiny_model: Path) -> Iterator[HostRecord]:
    rec = fleet[1]
    yield rec
    run = deploy(rec.name, "model_source=local", f"model_path={tiny_model}")
    assert run.returncode == 0, run.output[-3000:]


def no_instance_left(rec: HostRecord) -> None:
    assert on_host(rec, f"systemctl list-units --all --plain --no-legend '{UNIT}@*'") == ""
    left = on_host(rec, f"ls -d /etc/systemd/system/{UNIT}@* /etc/lemfleet/{UNIT}@* 2>/dev/null")
    assert left == "", left
    assert not listening(rec, 8081)
    assert on_host(rec, f"systemctl is-active {UNIT}.service") == "active"


def test_two_replicas_serve_on_two_ports_and_one_leaves_nothing_stale(host: HostRecord, tiny_model: Path) -> None:
    data = ["model_source=local", f"model_path={tiny_model}", "server_host=0.0.0.0", f"server_api_key={KEY}"]
    # A switch to 2 instances that fails the gate goes back to the one plain server it replaced.
    before = record(host)
    bad = deploy(host.name, *data, "server_instances=2", 'server_extra_args=["--no-such-llama-flag"]')
    assert bad.returncode != 0 and "rolled back: " in bad.output, bad.output[-4000:]
    assert "the last good state serves again" in bad.output, bad.output[-4000:]
    assert record(host) == before
    no_instance_left(host)

    run = deploy(host.name, *data, "server_instances=2")
    assert run.returncode == 0, run.output[-4000:]
    assert KEY not in run.output

    listed = record(host)["instances"]
    assert [(i["unit"], i["port"], i["devices"]) for i in listed] == [
        (f"{UNIT}@0.service", 8080, ["cpu"]),
        (f"{UNIT}@1.service", 8081, ["cpu"]),
    ]
    for n in (0, 1):
        state = on_host(host, f"systemctl is-active {UNIT}@{n}.service; systemctl is-enabled {UNIT}@{n}.service")
        assert state.split() == ["active", "enabled"], (n, state)
        dropin = on_host(host, f"cat /etc/systemd/system/{UNIT}@{n}.service.d/lemfleet-instance.conf")
        assert f"SocketBindAllow=tcp:{8080 + n}" in dropin and f"{UNIT}@{n}.env" in dropin
        assert listening(host, 8080 + n)
        assert chat(host, 8080 + n)
    threads = on_host(host, f"grep -h ^LEMFLEET_THREADS= /etc/lemfleet/{UNIT}@0.env /etc/lemfleet/{UNIT}@1.env")
    assert len(set(threads.splitlines())) == 1 and len(threads.splitlines()) == 2, threads
    assert on_host(host, f"test -e /etc/systemd/system/{UNIT}.service || echo gone") == "gone"

    suite = verify(host)
    assert suite.returncode == 0, suite.stdout[-3000:]
    rows = api.status(api.Fleet.from_inventory(PROJECT / "inventories" / "testbed.py"), limit=[host.name]).hosts
    assert [(r.host, r.active, r.health) for r in rows] == [(f"{host.name}@0", "active", 200),
                                                            (f"{host.name}@1", "active", 200)]  # fmt: skip

    rerun = deploy(host.name, *data, "server_instances=2")
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert not changed(rerun), changed(rerun)  # the template, env files and drop-ins are as they were

    back = deploy(host.name, *data, "server_instances=one")
    assert back.returncode == 0, back.output[-4000:]
    assert [i["unit"] for i in record(host)["instances"]] == [f"{UNIT}.service"]
    no_instance_left(host)
    assert chat(host, 8080)


def test_per_gpu_units_on_a_host_presenting_two_gpus(bed: list[HostRecord]) -> None:
    """The plan from the host's own detection of 2 recorded GPUs, and its units as the host's systemd loads them.

    Up to service start only: the host has no GPU (lemfleet/testbed/recorded_gpu.py), so nothing is started.
    Recording: nvidia-smi -L of a TITAN V and an RTX 5880 Ada (its source line in tests/fixtures/gpu/INDEX.md).
    """
    rec = testbed.add_gpu_host({"nvidia-smi": "nvidia-smi/titanv-plus-rtx5880ada-list.txt"})
    try:
        sections = split_sections(on_host(rec, probe_command(TARGET_PATHS)).splitlines())
        facts = facts_from_sections(sections, *parse_probe(on_host(rec, PROBE_COMMAND).splitlines()))
        assert [g.index for g in facts.gpus] == [0, 1], facts.gpus
        auto = plan_host(facts, validate({}), ModelInfo("tiny", 5_000_000))
        assert len(auto.instances) == 1 and "cannot be told" in auto.reasons["instances"]  # the listing has no VRAM
        plan = plan_host(facts, validate({"server_instances": "per-gpu"}), ModelInfo("tiny", 5_000_000))
        assert [i.env["CUDA_VISIBLE_DEVICES"] for i in plan.instances] == ["0", "1"]
        files = {
            f"/etc/systemd/system/{GPU_UNIT}@.service": render_unit(
                plan, unit_name=GPU_UNIT, user="root", binary="/usr/bin/sleep", api_key_file=None, per_instance=True
            )
        }
        for instance in plan.instances:
            n = instance.index or 0
            env_file = f"/etc/lemfleet/{GPU_UNIT}@{n}.env"
            files[env_file] = render_env(
                instance_plan(plan, instance), unit_name=f"{GPU_UNIT}@{n}", model_path="/m.gguf", extra_args=[]
            )
            files[f"/etc/systemd/system/{GPU_UNIT}@{n}.service.d/lemfleet-instance.conf"] = render_dropin(
                instance, unit_name=GPU_UNIT, env_file=env_file
            )
        for path, text in files.items():
            on_host(
                rec,
                f"mkdir -p {shlex.quote(str(Path(path).parent))} && cat > {shlex.quote(path)} <<'LEMFLEET'\n"
                f"{text}LEMFLEET",
            )
        on_host(rec, "systemctl daemon-reload")
        for n in (0, 1):
            shown = on_host(
                rec,
                f"systemctl show {GPU_UNIT}@{n}.service -p LoadState -p DeviceAllow "
                "-p DevicePolicy -p EnvironmentFiles -p ActiveState",
            )
            assert "LoadState=loaded" in shown and "DevicePolicy=closed" in shown and "ActiveState=inactive" in shown
            assert f"/dev/nvidia{n} rw" in shown and f"/dev/nvidia{1 - n} " not in shown, shown
            assert f"{GPU_UNIT}@{n}.env" in shown, shown
            env = on_host(rec, f"systemctl cat {GPU_UNIT}@{n}.service")
            assert f"SocketBindAllow=tcp:{8080 + n}" in env
        assert 'CUDA_VISIBLE_DEVICES="1"' in on_host(rec, f"cat /etc/lemfleet/{GPU_UNIT}@1.env")
    finally:
        testbed.remove(rec.name)
