"""``lemfleet remove`` on a real host: afterwards it has the files and users it had before its first deploy.

A fresh host's files (under the trees lemfleet or a package could write to) and users are
recorded, the host is deployed, ``remove --dry`` lists what would go and changes nothing, the host
is redeployed with two replicas (``server_instances=2``: a template unit, its instances and their
drop-ins), then ``remove`` takes it off. What may differ from before is what the packages the deploy installed
brought (their files, as dpkg lists them, and apt's and dpkg's own state): the README says which
packages stay and why. A second remove changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet import api, testbed
from lemfleet.cli import main
from lemfleet.testbed import HostRecord
from tests.testbed.conftest import PROJECT, deploy

INVENTORY = PROJECT / "inventories" / "testbed.py"
TREES = "/etc /var/lib /var/cache /opt /usr/local /srv /root /home"
# apt's and dpkg's own records of the packages, which the README says stay; systemd's journal
# catalogue and timer stamps, which change with time whatever is deployed.
PRUNED = (
    "/var/lib/apt",
    "/var/lib/dpkg",
    "/var/cache/apt",
    "/var/cache/debconf",
    "/var/lib/systemd",
    "/var/cache/ldconfig",
)
SNAPSHOT = (
    "find {trees} -xdev \\( {prune} \\) -prune -o -printf '%p %y %m %u %g\\n' 2>/dev/null | sort; "
    "echo --users; getent passwd | sort; echo --groups; getent group | sort; "
    "echo --packages; dpkg-query -W -f '${{Package}}\\n' | sort"
).format(trees=TREES, prune=" -o ".join(f"-path {p}" for p in PRUNED))


def snapshot(rec: HostRecord) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {"files": []}
    current = sections["files"]
    for line in testbed.ssh(rec, SNAPSHOT, timeout=120).splitlines():
        if line.startswith("--"):
            current = sections.setdefault(line[2:], [])
        elif line:
            current.append(line)
    return sections


def package_files(rec: HostRecord, packages: list[str]) -> set[str]:
    """Every path the new packages brought, by dpkg's own list (and the parent directories it created)."""
    if not packages:
        return set()
    listed = testbed.ssh(rec, "dpkg -L " + " ".join(packages), timeout=120).splitlines()
    return {line for line in listed if line.startswith("/")}


@pytest.fixture(scope="module")
def host(bed: list[HostRecord]) -> Iterator[HostRecord]:
    """A freshly booted host beside the session's bed, gone afterwards."""
    (rec,) = testbed.add(1)
    try:
        yield rec
    finally:
        testbed.remove(rec.name)


def test_remove_leaves_the_host_as_it_was_before_its_first_deploy(
    host: HostRecord, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(host)
    run = deploy(host.name, "model_source=local", f"model_path={tiny_model}")
    assert run.returncode == 0, run.output[-3000:]
    deployed = snapshot(host)
    # The snapshot sees what the deploy made (so an empty difference below means something).
    assert any(line.startswith("/opt/lemfleet/llama.cpp ") for line in deployed["files"]), deployed["files"][:20]
    assert any(line.startswith("lemfleet:") for line in deployed["users"])
    fleet = api.Fleet.from_inventory(INVENTORY)

    dry = api.remove(fleet, limit=[host.name], dry=True)
    assert dry.ok and dry.dry, dry.log[-3000:]
    listed = dry[host.name].removed
    for expected in ("Remove unit lemfleet-llama.service", "Remove /etc/lemfleet", "Remove /opt/lemfleet",
                     "Remove user lemfleet", "Remove models in /var/lib/lemfleet/models"):  # fmt: skip
        assert any(name.startswith(expected) for name in listed), listed
    assert snapshot(host)["files"] == deployed["files"]  # the dry run changed nothing
    assert testbed.ssh(host, "systemctl is-active lemfleet-llama.service", check=False).strip() == "active"

    # Two replicas: the template unit, its instances and their drop-ins are what the removal meets.
    run = deploy(host.name, "model_source=local", f"model_path={tiny_model}", "server_instances=2")
    assert run.returncode == 0, run.output[-3000:]
    argv = ["remove", str(INVENTORY), "--limit", host.name, "--yes"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    print(printed)  # the README quotes a sample
    assert f"{host.name}: removed" in printed
    unit = "removed: unit lemfleet-llama@.service and its instances lemfleet-llama@0.service, lemfleet-llama@1.service"
    assert unit in printed and "removed: lemfleet's drop-in(s) for lemfleet-llama@1.service" in printed

    after = snapshot(host)
    assert after["users"] == before["users"] and after["groups"] == before["groups"]
    new_packages = sorted(set(after["packages"]) - set(before["packages"]))
    brought = package_files(host, new_packages)
    print(f"packages the deploy installed, which stay: {new_packages}")
    paths = lambda files: {line.split(" ", 1)[0]: line for line in files}  # noqa: E731
    old, now = paths(before["files"]), paths(after["files"])
    added = sorted(p for p in now.keys() - old.keys() if p not in brought)
    gone = sorted(old.keys() - now.keys())
    changed = sorted(p for p in old.keys() & now.keys() if old[p] != now[p] and p not in brought)
    assert (added, gone, changed) == ([], [], []), f"packages installed: {new_packages}"
    # No unit of lemfleet's is loaded from a file or running. systemd may still list a removed unit's
    # name as "not-found inactive dead" until nothing refers to it; that is a name in memory, not a leftover.
    loaded = testbed.ssh(host, "systemctl list-units --all --plain --no-legend 'lemfleet*'", check=False)
    left = [
        line for line in loaded.splitlines() if line.strip() and line.split()[1:4] != ["not-found", "inactive", "dead"]
    ]
    assert left == [], loaded

    again = api.remove(fleet, limit=[host.name])
    assert again.ok and again[host.name].removed == () and again[host.name].outcome == "nothing to remove"
