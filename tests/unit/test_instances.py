"""server_instances: the choice (auto, per-gpu, replicas) from recorded GPU hosts, and the units it renders.

The GPU hosts are the recorded tool outputs of tests/fixtures/gpu (each scenario cites its source there);
the rendered template and drop-ins are loaded by systemd-analyze, as the plain unit is in test_hostile_values.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lemfleet.roles.detect import facts_from_sections
from lemfleet.roles.facts.host import split_sections
from lemfleet.roles.instances import check_setting
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.server import render_dropin, render_env, render_unit
from lemfleet.roles.server_units import (
    Present,
    dropin_path,
    instance_env_path,
    instance_plan,
    parse_present,
    stale_commands,
)
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate
from lemfleet.roles.transaction import Layout, restore_script
from tests.fixtures.gpu.hosts import UBUNTU_2404, scenario_host
from tests.unit.systemd_syntax import parse_env_file

GB = 10**9
CPU = facts_from_sections(
    split_sections((Path(__file__).parents[1] / "fixtures/host/debian12-nspawn-probe.txt").read_text().splitlines())
)
SMALL = ModelInfo("m", 5 * GB)


def plan(scenario: str, model: ModelInfo = SMALL, recorded: dict | None = None, **settings: object):
    facts = CPU if scenario == "cpu" else scenario_host(scenario, UBUNTU_2404)
    return plan_host(facts, validate(settings), model, recorded=recorded)


# -- the setting


@pytest.mark.parametrize(
    ("value", "clean"),
    [("one", "one"), ("per-gpu", "per-gpu"), ("auto", "auto"), (None, None), (2, 2), ("3", 3), (1, "one")],
)
def test_accepted_values(value, clean):
    assert check_setting("server_instances", value) == clean


@pytest.mark.parametrize("value", ["many", 0, 65, -1, True, 1.5, "per_gpu", ["one"]])
def test_a_bad_value_names_the_setting_the_value_and_what_is_accepted(value):
    with pytest.raises(SettingsError) as err:
        validate({"server_instances": value})
    text = str(err.value)
    assert f"server_instances={value!r} is not valid" in text
    assert "'one', 'per-gpu', 'auto', an integer from 1 to 64" in text


# -- the choice


def test_auto_on_eight_h100_runs_one_server_per_gpu_each_with_its_own_device():
    p = plan("h100-x8")
    assert len(p.instances) == 8
    assert (
        "one server per device" in p.reasons["instances"] and "fits the smallest (79.6 GiB)" in p.reasons["instances"]
    )
    for n, instance in enumerate(p.instances):
        assert (instance.index, instance.port, instance.devices) == (n, 8080 + n, (f"cuda:{n}",))
        assert instance.env["CUDA_VISIBLE_DEVICES"] == str(n)
        gpus = [node for node in instance.device_nodes if node.startswith("/dev/nvidia") and node[11:].isdigit()]
        assert gpus == [f"/dev/nvidia{n}"], instance.device_nodes
        assert instance.threads == 2  # 16 physical cores / 8


def test_auto_keeps_one_server_when_the_model_does_not_fit_one_gpu():
    p = plan("h100-x8", ModelInfo("big", 90 * GB))
    assert [i.index for i in p.instances] == [None]
    assert "does not fit the smallest of the 8 devices (79.6 GiB)" in p.reasons["instances"]
    assert p.tensor_split and p.instances[0].tensor_split == p.tensor_split


def test_auto_with_one_gpu_keeps_the_plain_unit():
    p = plan("h100")
    assert [i.index for i in p.instances] == [None]
    assert "1 device to serve on" in p.reasons["instances"]


def test_per_gpu_on_mig_runs_one_server_per_mig_instance():
    p = plan("a100-mig-2x3g40gb", server_instances="per-gpu")
    uuids = [i.env["CUDA_VISIBLE_DEVICES"] for i in p.instances]
    assert len(uuids) == 2 and all(u.startswith("MIG-") for u in uuids) and len(set(uuids)) == 2
    assert all("char-nvidia-caps" in i.device_nodes for i in p.instances)
    assert [i.port for i in p.instances] == [8080, 8081]


def test_gpu_devices_naming_one_mig_instance_leaves_one_server():
    uuid = plan("a100-mig-2x3g40gb", server_instances="per-gpu").instances[1].env["CUDA_VISIBLE_DEVICES"]
    p = plan("a100-mig-2x3g40gb", server_instances="per-gpu", gpu_devices=[uuid])
    assert [i.index for i in p.instances] == [None] and p.instances[0].env["CUDA_VISIBLE_DEVICES"] == uuid


def test_auto_on_a_partitioned_mi300x_gives_each_partition_its_share_of_the_pool():
    p = plan("mi300x-qpx")
    assert [i.env["HIP_VISIBLE_DEVICES"] for i in p.instances] == ["0", "1", "2", "3"]
    assert "fits the smallest (48.0 GiB)" in p.reasons["instances"]  # 192 GiB shared by 4, not 192 each
    assert "char-drm" in p.reasons["instances"]  # no render node known from this listing: said, not hidden


def test_auto_on_the_cpu_is_one_and_an_integer_makes_replicas_with_the_threads_split():
    assert [i.index for i in plan("cpu").instances] == [None]
    p = plan("cpu", server_instances=2)
    assert [(i.index, i.port, i.threads, i.devices) for i in p.instances] == [(0, 8080, 1, ("cpu",)),
                                                                              (1, 8081, 1, ("cpu",))]  # fmt: skip
    assert "2 replicas" in p.reasons["instances"] and "the 2 thread(s) split, 1 each" in p.reasons["instances"]


def test_per_gpu_on_the_cpu_keeps_one_plain_server():
    p = plan("cpu", server_instances="per-gpu")
    assert [i.index for i in p.instances] == [None] and "serves on the CPU" in p.reasons["instances"]


def test_a_host_deployed_before_instances_keeps_its_layout_until_the_setting_is_set():
    old = {"schema_version": 2, "service": {"unit": "lemfleet-llama.service", "port": 8080}}
    kept = plan("h100-x8", recorded=old)
    assert [i.index for i in kept.instances] == [None]
    assert "deployed before lemfleet had instances" in kept.reasons["instances"]
    assert len(plan("h100-x8", recorded=old, server_instances="auto").instances) == 8
    new = {**old, "instances": [{"unit": "lemfleet-llama.service", "port": 8080}]}
    assert len(plan("h100-x8", recorded=new).instances) == 8


def test_layouts_that_cannot_be_served_are_refused_by_name():
    with pytest.raises(SettingsError, match=r"server_port=65535 leaves no room for 2 instances"):
        plan("cpu", server_instances=2, server_port=65535)
    with pytest.raises(SettingsError, match=r"server_unit_name='llama@x' holds '@'"):
        plan("cpu", server_instances=2, server_unit_name="llama@x")


def test_replicas_on_gpus_go_round_robin():
    p = plan("h100-x8", server_instances=10)
    assert [i.env["CUDA_VISIBLE_DEVICES"] for i in p.instances] == [str(n % 8) for n in range(10)]


# -- the rendered units


def render_all(p, tmp_path: Path) -> tuple[str, dict[int, str], dict[int, dict[str, str]]]:
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    template = render_unit(p, unit_name="lemfleet-llama", user="lemfleet", binary=str(binary), api_key_file=None,
                           per_instance=True)  # fmt: skip
    dropins, envs = {}, {}
    for instance in p.instances:
        n = instance.index
        dropins[n] = render_dropin(
            instance, unit_name="lemfleet-llama", env_file=instance_env_path("lemfleet-llama", n)
        )
        env = render_env(instance_plan(p, instance), unit_name=f"lemfleet-llama@{n}", model_path="/m.gguf",
                         extra_args=[])  # fmt: skip
        envs[n] = parse_env_file(env)
    return template, dropins, envs


def test_each_gpu_instance_gets_its_own_port_devices_and_variables(tmp_path):
    p = plan("h100-x8", server_instances="per-gpu")
    template, dropins, envs = render_all(p, tmp_path)
    assert "DeviceAllow" not in template and "EnvironmentFile" not in template
    assert "SocketBindDeny=any" in template and "SocketBindAllow" not in template
    assert "DevicePolicy=closed" in template and "PrivateDevices=no" in template
    for n in range(8):
        assert envs[n]["LEMFLEET_PORT"] == str(8080 + n) and envs[n]["CUDA_VISIBLE_DEVICES"] == str(n)
        lines = dropins[n].splitlines()
        assert f"EnvironmentFile=/etc/lemfleet/lemfleet-llama@{n}.env" in lines
        assert [x for x in lines if x.startswith("SocketBindAllow")] == [f"SocketBindAllow=tcp:{8080 + n}"]
        allowed = [x.split("=", 1)[1] for x in lines if x.startswith("DeviceAllow=")]
        assert f"/dev/nvidia{n} rw" in allowed
        assert not [a for a in allowed if a.startswith("/dev/nvidia") and a.split()[0][11:].isdigit()
                    and a != f"/dev/nvidia{n} rw"]  # fmt: skip


def test_the_template_and_drop_ins_load_in_systemd(tmp_path):
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (apt install systemd)"
    p = plan("h100-x8", server_instances="per-gpu")
    template, dropins, _envs = render_all(p, tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    (units / "lemfleet-llama@.service").write_text(template)
    for n in (0, 7):
        folder = units / f"lemfleet-llama@{n}.service.d"
        folder.mkdir()
        (folder / "lemfleet-instance.conf").write_text(dropins[n])
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(units / "lemfleet-llama@0.service"), str(units / "lemfleet-llama@7.service")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    problems = [line for line in proc.stderr.splitlines() if "lemfleet-llama" in line and "not found" not in line]
    assert proc.returncode == 0 and not problems, proc.stderr[-3000:]


def test_one_instance_renders_exactly_as_before_instances():
    p = plan("cpu")
    instance = p.instances[0]
    assert instance_plan(p, instance) == p
    assert render_env(instance_plan(p, instance), unit_name="u", model_path="/m", extra_args=[]) == render_env(
        p, unit_name="u", model_path="/m", extra_args=[]
    )


# -- leaving nothing stale


def test_the_fact_reads_instances_template_plain_unit_and_record():
    present = parse_present([
        "/etc/systemd/system/lemfleet-llama@.service",
        "/etc/systemd/system/lemfleet-llama@0.service.d",
        "/etc/lemfleet/lemfleet-llama@3.env",
        "lemfleet-llama@1.service loaded active running llama-server serving m (lemfleet)",
        "--lemfleet-record--",
        '{"instances": [{"unit": "lemfleet-llama@0.service", "port": 8080}]}',
    ])  # fmt: skip
    assert present.indexes == {0, 1, 3} and present.template and not present.plain and present.count == 4
    assert present.recorded_units == [("lemfleet-llama@0.service", 8080)]
    plain = parse_present(["/etc/systemd/system/lemfleet-llama.service", "--lemfleet-record--",
                           '{"service": {"unit": "lemfleet-llama.service", "port": 8080}}'])  # fmt: skip
    assert plain.plain and plain.recorded_units == [("lemfleet-llama.service", 8080)]


def test_switching_two_instances_back_to_one_stops_and_removes_both_and_the_template():
    script = "\n".join(stale_commands("lemfleet-llama", Present(frozenset({0, 1}), True, False), [], False))
    for n in (0, 1):
        assert f"systemctl disable --now lemfleet-llama@{n}.service" in script
        assert dropin_path("lemfleet-llama", n) in script and instance_env_path("lemfleet-llama", n) in script
    assert "rm -f /etc/systemd/system/lemfleet-llama@.service" in script
    assert "lemfleet-llama.service " not in script and script.endswith("systemctl daemon-reload")


def test_switching_one_to_two_stops_the_plain_unit_and_three_to_two_the_third():
    script = "\n".join(stale_commands("lemfleet-llama", Present(frozenset(), False, True), [0, 1], True))
    assert "systemctl disable --now lemfleet-llama.service" in script
    assert "/etc/lemfleet/lemfleet-llama.env" in script
    script = "\n".join(stale_commands("lemfleet-llama", Present(frozenset({0, 1, 2}), True, False), [0, 1], True))
    assert "lemfleet-llama@2.service" in script and "@0" not in script and "@1" not in script
    assert not stale_commands("lemfleet-llama", Present(frozenset({0, 1}), True, False), [0, 1], True)


def test_a_rollback_from_two_instances_to_one_puts_the_plain_unit_back_and_removes_the_instances(tmp_path):
    etc, units = tmp_path / "etc", tmp_path / "units"
    etc.mkdir()
    units.mkdir()
    base = Layout.for_unit("x", 2)
    moved = [(name, str(units / Path(live).relative_to("/etc/systemd/system")) if live.startswith("/etc/systemd")
              else str(etc / Path(live).name)) for name, live in base.instance_files]  # fmt: skip
    layout = Layout(unit=str(units / "x.service"), env=str(etc / "x.env"), last_good=str(tmp_path / "good"),
                    current=str(tmp_path / "current"), api_key=str(etc / "api-key"), record=str(etc / "deployed.json"),
                    instance_files=tuple(moved))  # fmt: skip
    good = tmp_path / "good"
    good.mkdir()
    (good / "digest").write_text("d\n")
    (good / "unit").write_text("plain unit\n")
    (good / "env").write_text("LEMFLEET_PORT=8080\n")
    for _, live in layout.instance_files:  # the new layout: a template, two envs and drop-ins
        Path(live).parent.mkdir(parents=True, exist_ok=True)
        Path(live).write_text("new\n")
    subprocess.run(["bash", "-c", restore_script(layout)], check=True)
    assert (units / "x.service").read_text() == "plain unit\n"
    assert sorted(p.name for p in units.iterdir()) == ["x.service"]  # template, drop-ins and their folders gone
    assert sorted(p.name for p in etc.iterdir()) == ["x.env"]


# -- the record, status and Prometheus list every instance


def test_the_record_lists_each_instance_and_status_and_prometheus_read_each_one():
    from lemfleet.api.prometheus import target_for
    from lemfleet.api.status import status_command
    from lemfleet.roles.record import instance_records
    from lemfleet.sshtunnel import InventoryTarget, SshOptions

    p = plan("h100-x8", server_instances="per-gpu", server_host="0.0.0.0", server_api_key="k" * 24)
    record: dict[str, Any] = {
        "backend": "cuda",
        "service": {"unit": p.instances[0].unit("lemfleet-llama"), "host": "0.0.0.0", "port": 8080},
        "instances": [i.to_json("lemfleet-llama") for i in p.instances],
        "build": {"id": "b", "path": "/opt/lemfleet/llama.cpp/b"},
        "model": {"file": "m.gguf", "path": "/var/lib/lemfleet/models/m.gguf", "sha256": "ab" * 32},
    }
    assert record["instances"][3] == {"unit": "lemfleet-llama@3.service", "port": 8083, "devices": ["cuda:3"],
                                      "threads": 2}  # fmt: skip
    views = instance_records(record)
    assert [(v["service"]["unit"], v["service"]["port"]) for v in views] == [
        (f"lemfleet-llama@{n}.service", 8080 + n) for n in range(8)
    ]
    assert "lemfleet-llama@5.service" in status_command(views[5]) and ":8085/health" in status_command(views[5])
    target = InventoryTarget("gpu-1", SshOptions("10.0.0.7"), groups=("gpu-1", "fleet"))
    entries = [target_for(target, v)[0] for v in views]
    assert [e["targets"] for e in entries if e] == [[f"10.0.0.7:{8080 + n}"] for n in range(8)]
    assert {e["labels"]["instance_name"] for e in entries if e} == {f"lemfleet-llama@{n}.service" for n in range(8)}
    old = {k: v for k, v in record.items() if k != "instances"}  # a record from before instances: its one service
    assert [v["service"]["unit"] for v in instance_records(old)] == ["lemfleet-llama@0.service"]
