"""Hostile values on a real systemd, and objects lemfleet does not own on a real host.

- The unit and environment file rendered from hostile values (quotes, ``$()``, backticks, ``%``
  specifiers, ``;``, backslashes, unicode) are installed on a test-bed host with a binary that prints
  its arguments; systemd must start it with exactly the intended argv. This is the real-systemd
  check of the rules the unit tests read the files by (tests/unit/systemd_syntax.py).
- The ownership step refuses a login user, an unmarked unit and an unmarked directory, changes
  nothing of them, and adopts what an earlier lemfleet recorded in its deployed.json.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lemfleet import testbed
from lemfleet.roles.detect import facts_from_sections
from lemfleet.roles.facts.host import split_sections
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.server import env_path, render_env, render_unit
from lemfleet.roles.settings_check import validate
from lemfleet.testbed import HostRecord
from lemfleet.testbed.paths import KNOWN_HOSTS, SSH_KEY
from tests.testbed.conftest import pyinfra
from tests.unit.test_hostile_values import expected_argv

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "host" / "debian12-nspawn-probe.txt"
FACTS = facts_from_sections(split_sections(FIXTURE.read_text().splitlines()))
DUMP = "/usr/local/bin/lemfleet-argv-dump"
# Each argument, then the one variable the GPU runtime environment sets, base64-encoded one per line.
DUMP_SCRIPT = (
    '#!/bin/sh\nfor a in "$@"; do printf "%s" "$a" | base64 -w0; echo; done\n'
    'echo ENV; printf "%s" "${GGML_VK_VISIBLE_DEVICES-}" | base64 -w0; echo\n'
)
HOSTILE = "a\"b'c$d`e\\f%n;g(h)|i&j*k?l{m}~ 模型é ${PATH} $HOME $(id) `id` %%"
CASES: list[dict[str, Any]] = [
    {"alias": HOSTILE, "model_path": f"/var/lib/lemfleet/models/{HOSTILE}.gguf", "extra": []},
    {
        "alias": "plain",
        "model_path": "/m.gguf",
        "extra": ["--temp", "0.5", "$(id)", "`id`", "%n", "a;b", "${PATH}", "$HOME", "é", "--x=$$"],
        "run_env": {"GGML_VK_VISIBLE_DEVICES": HOSTILE},
    },
]


def put(rec: HostRecord, path: str, text: str, mode: str = "644") -> None:
    data = base64.b64encode(text.encode()).decode()
    testbed.ssh(rec, f"echo {data} | base64 -d > {path} && chmod {mode} {path}")


@pytest.fixture(scope="module")
def host() -> Iterator[HostRecord]:
    rec = testbed.add(1)[0]
    try:
        yield rec
    finally:
        testbed.remove(rec.name)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_systemd_starts_the_unit_with_exactly_the_intended_argv(host: HostRecord, case: int) -> None:
    spec = CASES[case]
    unit_name = f"lemfleet-hostile-{case}-{secrets.token_hex(4)}"  # a fresh unit: its journal is this run's alone
    plan = plan_host(FACTS, validate({}), ModelInfo("x", 1))
    plan = dataclasses.replace(plan, alias=spec["alias"], run_env=spec.get("run_env", {}))
    unit = render_unit(plan, unit_name=unit_name, user="lemfleet", binary=DUMP, api_key_file="/etc/lemfleet/k y")
    env = render_env(plan, unit_name=unit_name, model_path=spec["model_path"], extra_args=spec["extra"])
    testbed.ssh(host, "getent passwd lemfleet || useradd --system --user-group lemfleet; mkdir -p /etc/lemfleet")
    put(host, DUMP, DUMP_SCRIPT, "755")
    put(host, env_path(unit_name), env)
    put(host, f"/etc/systemd/system/{unit_name}.service", unit)
    path = f"/etc/systemd/system/{unit_name}.service"
    verify = testbed.ssh(host, f"systemd-analyze verify {path} 2>&1; echo rc=$?", check=False)
    assert verify.strip().endswith("rc=0") and path + ":" not in verify, verify
    testbed.ssh(host, f"systemctl daemon-reload && systemctl start {unit_name}", timeout=60)
    # The dump exits at once; the unit is then inactive (and may be unloaded), its output in the journal.
    testbed.ssh(host, f"for i in $(seq 50); do systemctl is-active -q {unit_name} || break; sleep 0.2; done")
    shown = testbed.ssh(host, f"journalctl --sync; journalctl -u {unit_name} -o cat --no-pager", check=False)
    lines = [line for line in shown.split("\n") if line and " " not in line]
    assert "ENV" in lines, shown + testbed.ssh(host, f"systemctl status {unit_name} --no-pager", check=False)
    marker = lines.index("ENV")
    argv = [base64.b64decode(line).decode() for line in lines[:marker]]
    assert argv == expected_argv(plan, spec["model_path"], spec["extra"], "/etc/lemfleet/k y")[1:]
    env_value = base64.b64decode(lines[marker + 1]).decode() if len(lines) > marker + 1 else ""  # "" prints nothing
    assert env_value == spec.get("run_env", {}).get("GGML_VK_VISIBLE_DEVICES", "")


def claim(rec: HostRecord, user: str, unit: str, model_dir: str):
    return pyinfra(
        rec.address, "tests/testbed/deploys/claim.py", "-y", f"--key={SSH_KEY}",
        f"--data=ssh_known_hosts_file={KNOWN_HOSTS}", "--data=ssh_strict_host_key_checking=yes",
        f"--data=user={user}", f"--data=unit={unit}", f"--data=model_dir={model_dir}", timeout=300,
    )  # fmt: skip


def test_a_login_user_a_foreign_unit_and_a_foreign_directory_are_left_alone(host: HostRecord) -> None:
    testbed.ssh(
        host,
        "id alice >/dev/null 2>&1 || useradd -m -s /bin/bash -c Alice alice; mkdir -p /srv/theirs; "
        "printf '[Service]\\nExecStart=/bin/true\\n' > /etc/systemd/system/theirs.service",
    )
    before = testbed.ssh(
        host, "getent passwd alice; stat -c '%a %U' /srv/theirs; md5sum /etc/systemd/system/theirs.service"
    )
    for user, unit, model_dir, said in (
        ("alice", "lemfleet-llama", "/var/lib/lemfleet/models", "server_user='alice'"),
        ("lemfleet2", "theirs", "/var/lib/lemfleet/models", "server_unit_name='theirs'"),
        ("lemfleet2", "lemfleet-llama", "/srv/theirs", "model_dir='/srv/theirs'"),
    ):
        run = claim(host, user, unit, model_dir)
        assert run.returncode != 0 and said in run.output, run.output[-3000:]
    assert (
        testbed.ssh(host, "getent passwd alice; stat -c '%a %U' /srv/theirs; md5sum /etc/systemd/system/theirs.service")
        == before
    )


def test_what_an_earlier_lemfleet_recorded_is_adopted_and_marked(host: HostRecord) -> None:
    testbed.ssh(
        host,
        "id lemfleet-old >/dev/null 2>&1 || useradd --system --user-group -d /var/lib/lemfleet -s /usr/sbin/nologin "
        "lemfleet-old; mkdir -p /srv/old-models /etc/lemfleet; printf '# Managed by lemfleet: x\\n' "
        '> /etc/systemd/system/old-llama.service; echo \'{"record_version": 1, "service": {"unit": '
        '"old-llama.service", "user": "lemfleet-old"}, "model": {"path": "/srv/old-models/a.gguf"}}\' '
        "> /etc/lemfleet/deployed.json",
    )
    run = claim(host, "lemfleet-old", "old-llama", "/srv/old-models")
    assert run.returncode == 0, run.output[-3000:]
    assert testbed.ssh(host, "getent passwd lemfleet-old").split(":")[4] == "lemfleet service user"
    assert testbed.ssh(host, "ls -A /srv/old-models").split() == [".lemfleet-owned"]
    again = claim(host, "lemfleet-old", "old-llama", "/srv/old-models")
    assert again.returncode == 0 and "No changes" in again.output, again.output[-3000:]
