"""The test bed gives real, separate systemd hosts that pyinfra reaches over SSH."""

from __future__ import annotations

import re

from lemfleet import testbed
from lemfleet.testbed import hosts as tb_hosts
from tests.testbed.conftest import pyinfra


def test_each_host_boots_its_own_systemd(bed):
    for rec in bed:
        # Late in a long session a login can wait on logind for a while; the question is only what PID 1 is.
        state = testbed.ssh(rec, "systemctl is-system-running", check=False, timeout=180).strip()  # 1 when degraded
        assert state in ("running", "degraded"), f"{rec.name}: {state}"
        assert testbed.ssh(rec, "cat /proc/1/comm").strip() == "systemd"


def test_hosts_have_their_own_name_filesystem_and_address(bed):
    names = {testbed.ssh(r, "hostname").strip() for r in bed}
    machine_ids = {testbed.ssh(r, "cat /etc/machine-id").strip() for r in bed}
    addresses = {testbed.ssh(r, "ip -4 -o addr show dev host0").split()[3] for r in bed}
    assert len(names) == len(machine_ids) == len(addresses) == len(bed)
    first, second = bed[0], bed[1]
    testbed.ssh(first, "echo only-here > /root/marker")
    assert testbed.ssh(second, "cat /root/marker", check=False) == ""
    testbed.ssh(first, "rm /root/marker")


def test_hosts_cannot_reach_each_other(bed):
    out = testbed.ssh(bed[0], f"timeout 3 bash -c '</dev/tcp/{bed[1].address}/22' && echo open || echo closed")
    assert out.strip() == "closed"


def test_pyinfra_installs_a_package_through_the_proxy_on_one_host_only(bed):
    first, second = bed[0], bed[1]
    result = pyinfra(
        "inventories/testbed.py",
        "--limit",
        first.name,
        "-y",
        "apt.packages",
        "packages=hello",
        "update=true",
    )
    assert result.returncode == 0, result.output
    assert testbed.ssh(first, "hello").strip() == "Hello, world!"
    assert "not installed" in testbed.ssh(second, "dpkg -s hello 2>&1 || echo not installed")
    # The host has no route but the proxy's; the .deb passed through its cache.
    routes = testbed.ssh(first, "ip route")
    assert "default" not in routes
    cached = list(tb_hosts.Path("/var/cache/lemfleet-testbed/apt-cacher-ng").rglob("hello_*.deb"))
    assert cached, "the package did not come through the test bed's apt proxy"


def test_a_cut_link_fails_that_host_and_no_other(bed):
    victim = bed[1]
    testbed.cut_link(victim.name)
    try:
        result = pyinfra("inventories/testbed.py", "-y", "--json", "exec", "--", "true", timeout=300)
    finally:
        testbed.restore_link(victim.name)
    assert result.returncode != 0
    report = result.json
    assert report["results"]["failed_hosts"] == [victim.name], result.output
    ok = [r.name for r in bed if r is not victim]
    for name in ok:
        assert re.search(rf"\[{name}\] (Success|Connected)", result.output), result.output
    assert testbed.ssh(victim, "true", check=False) == ""


def test_a_frozen_host_times_out_and_comes_back_when_thawed(bed):
    victim = bed[2]
    testbed.freeze(victim.name)
    try:
        assert testbed.ssh(victim, "echo alive", check=False, timeout=20) == ""
    finally:
        testbed.thaw(victim.name)
    assert testbed.ssh(victim, "echo alive").strip() == "alive"


def test_removing_a_host_leaves_no_trace(bed):
    (extra,) = testbed.add(1)
    assert testbed.ssh(extra, "hostname").strip() == f"lemfleet-{extra.name}"
    pid = extra.pid
    testbed.remove(extra.name)
    assert not tb_hosts.alive(pid)
    left = [thing for thing in testbed.leftovers() if extra.name in thing]
    assert left == []
    assert extra.name not in {r.name for r in testbed.load()}
    assert not tb_hosts.Path(extra.root).parent.exists()
