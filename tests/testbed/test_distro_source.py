"""llama_cpp_source=distro on a bare Debian sid test-bed host: Debian's own llama-server and ggml (CPU), no compile.

The host serves, passes the smoke test and the shipped verify suite, holds the packages at the planned versions,
keeps their .debs for rollback, and a rerun changes nothing. About 30 s with the sid root filesystem cached (its
debootstrap, once, took about 2 min here). The time from a bare host to serving and the disk
the packages take are printed and written to out/bench/distro-source.json (``-s`` shows them).

Then an upgrade: a local apt repository on the host re-versions the served packages (``+lemfleet1``, same
content, a newer version: a real apt upgrade path). A deploy of the new versions that fails the gate is rolled
back, old packages reinstalled from the kept .debs and held; one that passes is then undone by ``lemfleet
rollback`` the same way. Marked slow: the switch to a compiled source and back (a sid CPU compile unless the
controller's build cache holds it), which leaves no package held or installed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.roles.distro_builds import distro_offer, known_packages
from tests.testbed.conftest import PROJECT, deploy
from tests.testbed.test_verify_suite import verify

OFFER = distro_offer("debian", "", "sid", "x86_64", "cpu", ())
UPGRADE = {name: f"{version}+lemfleet1" for name, version in OFFER.versions.items()}
REPO = "/srv/lemfleet-upgrade"


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


def test_the_hosts_own_index_names_the_installed_packages(sid_host, served):
    """The fact a release outside lemfleet's table is decided from (roles/facts/apt_index.py), read live."""
    from lemfleet.roles.facts.apt_index import index_command, parse_index

    index = parse_index(testbed.ssh(sid_host, index_command()).splitlines())
    assert index.lists > 0
    for name, version in OFFER.versions.items():
        entry = index.entries[name]
        assert entry.installed == version and entry.candidate, entry


def installed(rec: testbed.HostRecord) -> dict[str, tuple[str, str]]:
    """``{package: (version, Status-Abbrev)}`` of the distro source's packages dpkg knows, removed ones included."""
    names = " ".join(known_packages())
    out = testbed.ssh(rec, f"dpkg-query -W -f='${{Package}}\\t${{Version}}\\t${{db:Status-Abbrev}}\\n' {names} "
                           "2>/dev/null || true")  # fmt: skip
    rows = [line.split("\t") for line in out.splitlines()]
    return {r[0]: (r[1], r[2].strip()) for r in rows if len(r) == 3 and r[2].strip() not in ("un", "pn")}


def held_at(versions: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {name: (version, "hi") for name, version in versions.items()}


def chat_answers(rec: testbed.HostRecord) -> bool:
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    out = testbed.ssh(rec, f"curl -sf -H 'Content-Type: application/json' -d '{body}' "
                           "http://127.0.0.1:8080/v1/chat/completions", check=False)  # fmt: skip
    return bool(out) and bool(json.loads(out)["choices"][0]["message"]["content"])


def restarted_and_answers(rec: testbed.HostRecord) -> bool:
    """The service starts again (what it loads at a start is there) and answers a chat."""
    testbed.ssh(rec, "systemctl restart lemfleet-llama.service; for i in $(seq 100); do "
                     "curl -sf http://127.0.0.1:8080/health >/dev/null && break; sleep 0.2; done")  # fmt: skip
    return chat_answers(rec)


def recorded_packages(rec: testbed.HostRecord) -> dict[str, str]:
    return json.loads(testbed.ssh(rec, "cat /etc/lemfleet/deployed.json"))["build"].get("packages") or {}


def distro_deploy(rec: testbed.HostRecord, model: Path, versions: dict[str, str] | None = None, *data: str):
    pinned = [f"llama_cpp_distro_versions={json.dumps(versions)}"] if versions else []
    return deploy(rec.name, "llama_cpp_source=distro", *pinned, "model_source=local", f"model_path={model}", *data)


def rollback(rec: testbed.HostRecord, records: Path) -> int:
    from lemfleet.cli import main

    return main(["rollback", "inventories/testbed.py", "--limit", rec.name, "--records", str(records), "--quiet"])


@pytest.fixture(scope="module")
def upgrade_repo(sid_host, served) -> str:
    """An apt repository on the host holding the served packages re-versioned (+lemfleet1): the kept .debs
    unpacked, Version and the exact (=) dependencies between them raised, built again with dpkg-deb."""
    script = f"""set -e
rm -rf {REPO} && mkdir -p {REPO}/work && cd {REPO}
for f in /opt/lemfleet/llama.cpp/current/debs/*.deb; do
  rm -rf work/x && dpkg-deb -R "$f" work/x && v=$(dpkg-deb -f "$f" Version)
  sed -i -e "s/^Version: .*/Version: $v+lemfleet1/" -e "s/(= $v)/(= $v+lemfleet1)/g" work/x/DEBIAN/control
  dpkg-deb -Zgzip -b work/x "$(dpkg-deb -f "$f" Package)_lemfleet1.deb" >/dev/null
done
rm -rf work
for f in *.deb; do dpkg-deb -f "$f"; echo "Filename: ./$f"; echo "Size: $(stat -c %s "$f")"
  echo "SHA256: $(sha256sum "$f" | cut -d' ' -f1)"; echo; done > Packages
printf 'Origin: lemfleet-test\nLabel: lemfleet-test\nDate: %s\nSHA256:\n %s %s Packages\n' \
  "$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')" "$(sha256sum Packages | cut -d' ' -f1)" \
  "$(stat -c %s Packages)" > Release
echo 'deb [trusted=yes] copy:{REPO} ./' > /etc/apt/sources.list.d/lemfleet-upgrade.list
"""
    testbed.ssh(sid_host, script, timeout=300)
    return REPO


def test_an_upgrade_that_fails_the_gate_puts_the_old_packages_back_held(sid_host, upgrade_repo, tiny_model):
    assert installed(sid_host) == held_at(OFFER.versions)
    run = distro_deploy(sid_host, tiny_model, UPGRADE, 'server_extra_args=["--no-such-llama-flag"]')
    assert run.returncode != 0, run.output[-3000:]
    assert "rolled back: " in run.output and "the last good state serves again" in run.output, run.output[-4000:]
    # The new versions were installed (their build directory and its .debs are there), and are gone again.
    upgraded = testbed.ssh(sid_host, "cat /opt/lemfleet/llama.cpp/distro-*/build.json")
    assert UPGRADE["llama.cpp-tools"] in upgraded, upgraded
    assert installed(sid_host) == held_at(OFFER.versions)
    assert recorded_packages(sid_host) == OFFER.versions and chat_answers(sid_host)
    rerun = distro_deploy(sid_host, tiny_model)
    assert rerun.returncode == 0 and changed(rerun) == 0, rerun.output[-3000:]


def test_lemfleet_rollback_after_an_upgrade_reinstalls_the_old_packages(sid_host, upgrade_repo, tiny_model, tmp_path):
    run = distro_deploy(sid_host, tiny_model, UPGRADE)
    assert run.returncode == 0, run.output[-3000:]
    assert installed(sid_host) == held_at(UPGRADE) and recorded_packages(sid_host) == UPGRADE
    assert rollback(sid_host, tmp_path) == 0
    assert installed(sid_host) == held_at(OFFER.versions)
    assert recorded_packages(sid_host) == OFFER.versions and chat_answers(sid_host)


@pytest.mark.slow
def test_a_switch_to_a_compiled_source_and_back_leaves_no_distro_package_behind(sid_host, served, tiny_model, tmp_path):
    """distro -> pypi-sdist: the packages are unheld with the switch and purged after the gate; their .debs stay
    only with the previous state, from which ``lemfleet rollback`` reinstalls and holds them; forward again purges
    them again. Slow: a sid CPU compile (about 13 min on 2 cores) unless the controller's build cache has it."""
    distro_versions = recorded_packages(sid_host)
    run = deploy(sid_host.name, "model_source=local", f"model_path={tiny_model}")
    assert run.returncode == 0, run.output[-4000:]
    assert json.loads(testbed.ssh(sid_host, "cat /etc/lemfleet/deployed.json"))["build"]["source"] != "distro"
    assert installed(sid_host) == {}  # not in dpkg -l at all: purged, not only removed
    assert not set(known_packages()) & set(testbed.ssh(sid_host, "apt-mark showhold").split())
    previous = testbed.ssh(sid_host, "readlink -f /var/lib/lemfleet/previous/build").strip()
    # find follows no link (``current`` and ``previous`` under the builds point at build directories). apt's own
    # cache (/var/cache/apt/archives) is apt's to manage (apt-get autoclean), not lemfleet's.
    every = testbed.ssh(sid_host, "find /opt/lemfleet -name '*.deb' 2>/dev/null || true").split()
    debs = [d for d in every if d.rsplit("/", 1)[-1].split("_")[0] in known_packages()]
    assert debs and all(d.startswith(f"{previous}/debs/") for d in debs), (previous, debs)
    assert chat_answers(sid_host)
    assert restarted_and_answers(sid_host)  # what it loads at a start survived the purge (libgomp1)
    rerun = deploy(sid_host.name, "model_source=local", f"model_path={tiny_model}")
    assert rerun.returncode == 0 and changed(rerun) == 0, rerun.output[-3000:]

    assert rollback(sid_host, tmp_path) == 0  # back to the distro state, from its kept .debs
    assert installed(sid_host) == held_at(distro_versions) and chat_answers(sid_host)
    assert rollback(sid_host, tmp_path) == 0  # forward to the compiled state: the packages go again
    assert installed(sid_host) == {} and chat_answers(sid_host)

    # A switch back to the distro source that fails the gate: the compiled state serves again, and the packages
    # the failed state installed are purged by the restore, held or not (roles/distro_release.py).
    failed = distro_deploy(sid_host, tiny_model, None, 'server_extra_args=["--no-such-llama-flag"]')
    assert failed.returncode != 0 and "rolled back: " in failed.output, failed.output[-4000:]
    assert installed(sid_host) == {}, failed.output[-3000:]
    assert not set(known_packages()) & set(testbed.ssh(sid_host, "apt-mark showhold").split())
    assert json.loads(testbed.ssh(sid_host, "cat /etc/lemfleet/deployed.json"))["build"]["source"] != "distro"
    assert chat_answers(sid_host)
    assert restarted_and_answers(sid_host)
