"""``lemfleet remove``'s plan: what it takes off a host and what it leaves, from the host's footprint (no host)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lemfleet.cli import main
from lemfleet.roles.ops import USER_COMMENT
from lemfleet.roles.ownership import DIR_MARK
from lemfleet.roles.remove_plan import Record, candidates, footprint_command, parse, plan_removal
from lemfleet.roles.settings_check import validate

MODELS = "/var/lib/lemfleet/models"
DEPLOYED = f"""--units
lemfleet-llama.service
--loaded
lemfleet-llama.service loaded active running lemfleet llama-server
ssh.service loaded active running OpenBSD Secure Shell server
--links
/etc/systemd/system/multi-user.target.wants/lemfleet-llama.service\t/etc/systemd/system/lemfleet-llama.service
/etc/systemd/system/multi-user.target.wants/ssh.service\t/lib/systemd/system/ssh.service
--dropins
--passwd
lemfleet:x:998:998:{USER_COMMENT}:/var/lib/lemfleet:/usr/sbin/nologin
--group
lemfleet:x:998:
--paths
/etc/lemfleet
/opt/lemfleet
/etc/apt/apt.conf.d/80lemfleet-proxy
--models
{MODELS}/
{MODELS}/{DIR_MARK}
{MODELS}/0123456789ab-tiny.gguf
{MODELS}/0123456789ab-tiny.gguf.verified
--state
/var/lib/lemfleet/
/var/lib/lemfleet/models
/var/lib/lemfleet/last-good
/var/lib/lemfleet/previous
--drivers
"""


def observed(text: str = DEPLOYED) -> dict[str, list[str]]:
    return parse(text.splitlines())


def names(text: str = DEPLOYED, users: tuple[str, ...] = ("lemfleet",)) -> list[str]:
    return [r.what for r in plan_removal(observed(text), users).removals]


def test_a_deployed_host_loses_units_files_models_and_user_in_that_order() -> None:
    plan = plan_removal(observed(), ["lemfleet"])
    assert [r.what for r in plan.removals] == [
        "Remove unit lemfleet-llama.service",
        "Remove /etc/lemfleet (config, key file and deploy record)",
        "Remove /opt/lemfleet (llama.cpp sources, build trees and builds)",
        "Remove /etc/apt/apt.conf.d/80lemfleet-proxy (apt proxy setting)",
        "Remove /var/lib/lemfleet/last-good (last good state)",
        "Remove /var/lib/lemfleet/previous (previous state)",
        f"Remove models in {MODELS}: 0123456789ab-tiny.gguf",
        "Remove /var/lib/lemfleet, empty now",
        "Remove user lemfleet and its group",
    ]
    unit = plan.removals[0].commands
    assert unit[0] == "systemctl disable --now lemfleet-llama.service 2>/dev/null || true"
    assert unit[1] == (
        "rm -f /etc/systemd/system/lemfleet-llama.service "
        "/etc/systemd/system/multi-user.target.wants/lemfleet-llama.service"
    )
    assert "ssh.service" not in " ".join(c for r in plan.removals for c in r.commands)
    assert plan.removals[-1].commands == (
        "userdel -- lemfleet",
        "if getent group lemfleet >/dev/null; then groupdel -- lemfleet; fi",
    )
    assert plan.kept == ()


def test_a_template_takes_its_instances_and_their_links_with_it() -> None:
    text = (
        DEPLOYED.replace("lemfleet-llama.service\n--loaded", "lemfleet-llama@.service\n--loaded")
        .replace(
            "--links\n",
            "--links\n/etc/systemd/system/multi-user.target.wants/lemfleet-llama@1.service"
            "\t/etc/systemd/system/lemfleet-llama@.service\n",
        )
        .replace("--loaded\n", "--loaded\n● lemfleet-llama@0.service loaded failed failed lemfleet llama-server 0\n")
    )
    dropins = "/etc/systemd/system/lemfleet-llama@0.service.d"
    text = text.replace(
        "--dropins\n", f"--dropins\n{dropins}/\n+{dropins}/lemfleet-instance.conf\n-{dropins}/override.conf\n"
    )
    plan = plan_removal(observed(text), ["lemfleet"])
    unit = plan.removals[0]
    assert plan.removals[1].commands == (
        f"rm -f -- {dropins}/lemfleet-instance.conf",
        "systemctl daemon-reload",
    )  # the operator's override.conf stays, and with it the directory
    assert plan.kept[0] == f"{dropins}/override.conf (an operator's drop-in; lemfleet never writes one)"
    assert (
        unit.what
        == "Remove unit lemfleet-llama@.service and its instances lemfleet-llama@0.service, lemfleet-llama@1.service"
    )
    assert "systemctl disable --now lemfleet-llama@0.service 2>/dev/null || true" in unit.commands
    assert "systemctl disable --now lemfleet-llama@1.service 2>/dev/null || true" in unit.commands
    assert "/etc/systemd/system/multi-user.target.wants/lemfleet-llama@1.service" in unit.commands[3]


def test_what_lemfleet_did_not_create_stays_and_is_named() -> None:
    text = (
        DEPLOYED.replace(USER_COMMENT, "Build bot")
        .replace(
            "--dropins\n",
            "--dropins\n/etc/systemd/system/lemfleet-llama.service.d/\n-/etc/systemd/system/lemfleet-llama.service.d/"
            "override.conf\n/etc/systemd/system/ssh.service.d/\n-/etc/systemd/system/ssh.service.d/local.conf\n",
        )
        .replace(f"{MODELS}/{DIR_MARK}\n", f"{MODELS}/{DIR_MARK}\n{MODELS}/mine.gguf\n{MODELS}/notes\n")
    )
    text = text.replace("--drivers\n", "--drivers\n/etc/apt/preferences.d/rocm-pin-600\n")
    text = text.replace("/var/lib/lemfleet/previous\n", "/var/lib/lemfleet/previous\n/var/lib/lemfleet/x\n")
    plan = plan_removal(observed(text), ["lemfleet"])
    removed = [r.what for r in plan.removals]
    assert "Remove user lemfleet and its group" not in removed and "Remove /var/lib/lemfleet, empty now" not in removed
    assert "Remove /var/lib/lemfleet/x (lemfleet's state)" in removed  # the service user's home is lemfleet's
    models = next(r for r in plan.removals if r.what.startswith("Remove models"))
    assert models.commands == (
        f"rm -f -- {MODELS}/{DIR_MARK} {MODELS}/0123456789ab-tiny.gguf {MODELS}/0123456789ab-tiny.gguf.verified",
    )  # no rmdir: the directory still holds the operator's files
    assert plan.kept == (
        "/etc/systemd/system/lemfleet-llama.service.d/override.conf (an operator's drop-in; lemfleet never writes one)",
        f"{MODELS}: mine.gguf, notes (not placed by lemfleet)",
        "user lemfleet (lemfleet did not create it: its comment is 'Build bot')",
        "/etc/apt/preferences.d/rocm-pin-600 (driver repository: the driver packages stay)",
    )


def test_an_earlier_lemfleets_unmarked_unit_and_user_go_when_the_record_names_them() -> None:
    text = DEPLOYED.replace("--units\nlemfleet-llama.service\n", "--units\n--recorded\nlemfleet-llama.service\n")
    text = text.replace(USER_COMMENT, "")
    assert "Remove user lemfleet and its group" not in names(text)
    plan = plan_removal(observed(text), ["lemfleet"], recorded_user="lemfleet")
    assert plan.removals[0].what == "Remove unit lemfleet-llama.service"
    assert plan.removals[-1].what == "Remove user lemfleet and its group"


def test_a_host_without_lemfleet_gets_no_removal() -> None:
    empty = "--units\n--recorded\n--loaded\nssh.service loaded active running x\n--links\n--dropins\n--passwd\n"
    plan = plan_removal(observed(empty + "--group\n--paths\n--models\n--state\n--drivers\n"), ["lemfleet"])
    assert plan.removals == () and plan.kept == ()


def test_candidates_add_the_recorded_user_and_model_directories() -> None:
    settings = validate({"server_user": "llm", "model_dir": "/srv/models"})
    record = {"service": {"user": "old"}, "model": {"path": "/data/m/x.gguf"}}
    record["service"]["unit"] = "old-llama.service"
    look = candidates(settings, {"record": record, "last_good_model": "/var/lib/lemfleet/models/a.gguf"})
    assert look.users == ("llm", "old") and (look.recorded_unit, look.recorded_user) == ("old-llama.service", "old")
    assert look.model_dirs == ("/data/m", "/srv/models", MODELS)
    hostile = candidates(settings, {"record": {"service": {"unit": "../../x.service; rm -rf /"}}})
    assert hostile.recorded_unit is None
    found = Record().process(['{"service": {"user": "u"}}', "", "--link", "/m/a.gguf"])
    assert found == {"record": {"service": {"user": "u"}}, "last_good_model": "/m/a.gguf"}
    assert Record().process(["not json", "--link"]) == {"record": {}, "last_good_model": None}


def test_the_footprint_and_model_removal_run_for_real_on_a_directory(tmp_path: Path) -> None:
    """The read-only footprint command and the model directory's removal, run by sh on temporary directories."""
    ours, handed = tmp_path / "ours", tmp_path / "handed"
    for directory in (ours, handed):
        directory.mkdir()
        (directory / DIR_MARK).touch()
        (directory / "0123456789ab-tiny.gguf").write_bytes(b"GGUF")
        (directory / "0123456789ab-tiny.gguf.verified").write_text("sha 4 5\n")
        (directory / "0123456789ab-big.gguf.partial").write_bytes(b"GG")
    (handed / "operator's model.gguf").write_bytes(b"GGUF")
    command = footprint_command(["lemfleet-no-such-user"], [str(ours), str(handed)])
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True, timeout=60)
    plan = plan_removal(parse(done.stdout.splitlines()), ["lemfleet-no-such-user"])
    for removal in plan.removals:
        if removal.what.startswith("Remove models in"):
            subprocess.run(["sh", "-c", " && ".join(removal.commands)], check=True, timeout=60)
    assert not ours.exists()
    assert sorted(p.name for p in handed.iterdir()) == ["operator's model.gguf"]
    assert f"{handed}: operator's model.gguf (not placed by lemfleet)" in plan.kept


def test_the_command_refuses_a_real_removal_without_yes_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["remove", "no-such-inventory.py"]) == 2
    assert "add --yes" in capsys.readouterr().err
