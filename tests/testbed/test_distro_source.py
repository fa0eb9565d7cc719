"""llama_cpp_source=distro on a bare Debian sid test-bed host: Debian's own llama-server and ggml (CPU), no compile.

The host serves, passes the smoke test and the shipped verify suite, holds the packages at the planned versions,
keeps their .debs for rollback, and a rerun changes nothing. About 30 s with the sid root filesystem cached (its
debootstrap, once, took about 2 min here). The time from a bare host to serving and the disk
the packages take are printed and written to out/bench/distro-source.json (``-s`` shows them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.roles.distro_builds import distro_offer
from tests.testbed.conftest import PROJECT, deploy
from tests.testbed.test_verify_suite import verify

OFFER = distro_offer("debian", "", "sid", "x86_64", "cpu", ())


def changed(run) -> int:
    return int(run.json["results"]["totals"]["success"])


def kib(rec: testbed.HostRecord, command: str) -> int:
    return int(testbed.ssh(rec, command).split()[0])


@pytest.fixture(scope="module")
def sid_host() -> Iterator[testbed.HostRecord]:
    if os.geteuid() != 0:
        pytest.fail("test-bed tests need root; deselect them with -m 'not testbed'")
    rec = testbed.add(1, suite="sid")[0]
    yield rec
    testbed.remove(rec.name)


@pytest.fixture(scope="module")
def served(sid_host: testbed.HostRecord, tiny_model: Path) -> dict[str, float]:
    """The first deploy, timed from a bare host; the disk /usr grew by, measured around it."""
    usr_before = kib(sid_host, "du -sxk /usr")
    start = time.monotonic()
    run = deploy(sid_host.name, "llama_cpp_source=distro", "model_source=local", f"model_path={tiny_model}")
    seconds = time.monotonic() - start
    assert run.returncode == 0, run.output[-4000:]
    names = " ".join(OFFER.versions)
    figures = {
        "seconds_to_serving": round(seconds, 1),
        "usr_growth_kib": kib(sid_host, "du -sxk /usr") - usr_before,
        "packages_installed_kib": sum(
            int(v) for v in testbed.ssh(sid_host, f"dpkg-query -W -f='${{Installed-Size}}\\n' {names}").split()
        ),
        "kept_debs_kib": kib(sid_host, "du -sk /opt/lemfleet/llama.cpp/current/debs/"),
    }
    out = PROJECT / "out" / "bench" / "distro-source.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\ndistro source on a bare sid host: {figures}")
    return figures


def test_a_bare_sid_host_serves_from_debians_packages_and_passes_the_smoke_test(sid_host, served):
    smoke = json.loads((PROJECT / "out" / "smoke" / f"{sid_host.name}.json").read_text())
    assert smoke["ok"], smoke
    record = json.loads(testbed.ssh(sid_host, "cat /etc/lemfleet/deployed.json"))
    build = record["build"]
    assert build["source"] == "distro" and build["packages"] == OFFER.versions
    assert build["id"].startswith("distro-") and build["path"] == f"/opt/lemfleet/llama.cpp/{build['id']}"
    assert testbed.ssh(sid_host, "readlink /opt/lemfleet/llama.cpp/current/bin/llama-server").strip() == (
        "/usr/bin/llama-server"
    )
    # The unit is lemfleet's, running the distribution's binary; the package's own units are not installed.
    unit = testbed.ssh(sid_host, "systemctl show -p ExecStart,User lemfleet-llama.service")
    assert "/opt/lemfleet/llama.cpp/current/bin/llama-server" in unit and "User=lemfleet" in unit
    unit_file = "/usr/lib/systemd/system/llama-server.service"
    assert testbed.ssh(sid_host, f"test -e {unit_file} && echo present || echo absent").strip() == "absent"


def test_the_packages_are_held_and_their_debs_kept(sid_host, served):
    held = set(testbed.ssh(sid_host, "apt-mark showhold").split())
    assert set(OFFER.versions) <= held
    debs = testbed.ssh(sid_host, "ls /opt/lemfleet/llama.cpp/current/debs/").split()
    assert sorted(d.split("_")[0] for d in debs) == sorted(OFFER.versions)


def test_the_verify_suite_passes(sid_host, served):
    proc = verify(sid_host)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_a_rerun_changes_nothing(sid_host, served, tiny_model):
    run = deploy(sid_host.name, "llama_cpp_source=distro", "model_source=local", f"model_path={tiny_model}")
    assert run.returncode == 0, run.output[-3000:]
    assert changed(run) == 0, run.output[-3000:]
