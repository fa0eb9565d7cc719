"""What lemfleet refuses to take over: system names on the controller, foreign objects on the host."""

from __future__ import annotations

import pytest

from lemfleet.roles import reserved
from lemfleet.roles.ownership import DIR_MARK, Ownership, parse, problems
from lemfleet.roles.values import UnsafeValue

RECORD_V1 = (
    '{"record_version": 1, "service": {"unit": "lemfleet-llama.service", "user": "lemfleet"}, '
    '"model": {"path": "/var/lib/lemfleet/models/0a1b2c3d4e5f-m.gguf"}}'
)


def observed(text: str) -> dict[str, list[str]]:
    return parse(text.strip().splitlines())


FRESH = observed("--passwd\n--unit\n--vendor\n--dir\n--record\n")


@pytest.mark.parametrize("user", ["root", "ubuntu", "debian", "nobody", "sshd", "systemd-network", "_apt", "Lemfleet"])
def test_system_and_login_users_are_refused(user):
    with pytest.raises(UnsafeValue, match="server_user"):
        reserved.service_user("server_user", user)


@pytest.mark.parametrize("unit", ["ssh", "sshd", "systemd-journald", "getty@tty1", "dbus", "cron", "user@1000",
                                  "lemfleet-llamá", "lemfleet.service", "a b", "-x"])  # fmt: skip
def test_system_and_unloadable_unit_names_are_refused(unit):
    with pytest.raises(UnsafeValue, match="server_unit_name"):
        reserved.unit_name("server_unit_name", unit)


@pytest.mark.parametrize(
    "path", ["/", "/tmp", "/var", "/etc", "/home", "/home/alice", "/usr/local", "/tmp/x", "/var/lib/../tmp", "rel",
             "/etc/lemfleet", "/opt/lemfleet/llama.cpp/builds", "/root/models"],
)  # fmt: skip
def test_system_directories_are_refused(path):
    with pytest.raises(UnsafeValue, match="model_dir"):
        reserved.model_dir("model_dir", path)


@pytest.mark.parametrize("good", ["/var/lib/lemfleet/models", "/srv/models", "/data/llm", "/var/lib/models/"])
def test_directories_of_lemfleets_own_pass(good):
    assert reserved.model_dir("model_dir", good) == good


def test_a_fresh_host_has_nothing_to_refuse():
    assert problems(FRESH, "lemfleet", "lemfleet-llama", "/var/lib/lemfleet/models") == []


def test_a_login_user_on_the_host_is_refused():
    host = observed("--passwd\nalice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n--unit\n--vendor\n--dir\n--record\n")
    (problem,) = problems(host, "alice", "lemfleet-llama", "/var/lib/lemfleet/models")
    assert "server_user='alice'" in problem and "did not create" in problem


def test_a_user_lemfleet_marked_is_its_own():
    host = observed("--passwd\nllm:x:998:998:lemfleet service user:/var/lib/lemfleet:/usr/sbin/nologin\n"
                    "--unit\n--vendor\n--dir\n--record\n")  # fmt: skip
    assert problems(host, "llm", "lemfleet-llama", "/var/lib/lemfleet/models") == []


def test_an_earlier_versions_fleet_is_adopted_from_its_record():
    """Version-1 deploys made the user, unit and directory without marks; their record names them."""
    host = observed(
        "--passwd\nlemfleet:x:998:998::/var/lib/lemfleet:/usr/sbin/nologin\n"
        "--unit\n# Managed by lemfleet: changes here are overwritten on the next deploy.\n"
        f"--vendor\n--dir\ndir\n--record\n{RECORD_V1}\n"
    )
    assert problems(host, "lemfleet", "lemfleet-llama", "/var/lib/lemfleet/models") == []


def test_an_unmarked_unit_or_a_packaged_unit_is_refused():
    foreign = observed("--passwd\n--unit\n[Unit]\n--vendor\n--dir\n--record\n")
    assert "lemfleet did not write it" in problems(foreign, "lemfleet", "web", "/srv/m")[0]
    packaged = observed("--passwd\n--unit\n--vendor\n/usr/lib/systemd/system/nginx2.service\n--dir\n--record\n")
    assert "a package installed" in problems(packaged, "lemfleet", "nginx2", "/srv/m")[0]


def test_an_existing_directory_is_taken_only_when_marked():
    unmarked = observed("--passwd\n--unit\n--vendor\n--dir\ndir\n--record\n")
    (problem,) = problems(unmarked, "lemfleet", "lemfleet-llama", "/srv/models")
    assert f"/srv/models/{DIR_MARK}" in problem
    marked = observed("--passwd\n--unit\n--vendor\n--dir\ndir\nmarked\n--record\n")
    assert problems(marked, "lemfleet", "lemfleet-llama", "/srv/models") == []


def test_a_broken_record_adopts_nothing():
    host = observed("--passwd\nlemfleet:x:998:998::/var/lib/lemfleet:/usr/sbin/nologin\n--unit\n--vendor\n--dir\n"
                    "--record\n{not json\n")  # fmt: skip
    assert len(problems(host, "lemfleet", "lemfleet-llama", "/srv/m")) == 1


def test_the_fact_command_quotes_every_name():
    command = Ownership().command("lemfleet", "lemfleet-llama", "/srv/my models")
    assert "'/srv/my models'" in command and "'/srv/my models/.lemfleet-owned'" in command
