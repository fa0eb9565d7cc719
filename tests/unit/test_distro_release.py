"""The distro source's packages across state changes: the reinstall hook, the fact, the purge (pure parts).

What dpkg and apt do with them runs on the test bed (tests/testbed/test_distro_source.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from lemfleet.roles.distro_release import (
    AutoInstalled,
    packages_of_record,
    parse_distro_packages,
    purge_script,
    reinstall_script,
    unused,
)
from lemfleet.roles.transaction import Layout, restore_script

BUILD = "/opt/lemfleet/llama.cpp/distro-0123456789ab/build.json"
VERSIONS = {"llama.cpp-tools": "1:0.7.0+dfsg-2", "libllama0": "1:0.7.0+dfsg-2", "libggml0": "0.27.0-1"}
RECORD = {"backend": "cpu", "build_id": "distro-0123456789ab", "source": "distro", "packages": VERSIONS}


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False, timeout=30)


def test_the_fact_keeps_only_the_packages_a_distro_build_names_that_are_installed():
    lines = [
        f"@@lemfleet:build {BUILD}",
        json.dumps(RECORD),
        "",
        "@@lemfleet:build /opt/lemfleet/llama.cpp/distro-broken/build.json",
        '{"source": "distro", "packa',
        "@@lemfleet:dpkg",
        "llama.cpp-tools\t1:0.7.0+dfsg-2\thi ",
        "libllama0\t1:0.7.0+dfsg-2\thi ",
        "libggml0\t0.27.0-1\tii ",
        "libggml0-backend-vulkan\t0.27.0-1\thi ",  # installed, but no build of lemfleet's names it
    ]
    assert parse_distro_packages(lines) == {
        "llama.cpp-tools": ("1:0.7.0+dfsg-2", True),
        "libllama0": ("1:0.7.0+dfsg-2", True),
        "libggml0": ("0.27.0-1", False),
    }
    assert parse_distro_packages([]) == {}


def test_the_packages_a_state_does_not_use_are_released():
    installed = {"llama.cpp-tools": ("1", True), "libllama0": ("1", True), "libggml0-backend-vulkan": ("0.27", True)}
    assert unused(installed, ()) == ["libggml0-backend-vulkan", "libllama0", "llama.cpp-tools"]
    assert unused(installed, ("llama.cpp-tools", "libllama0", "libggml0")) == ["libggml0-backend-vulkan"]
    assert packages_of_record({"build": {**RECORD, "id": "x"}}) == ("libggml0", "libllama0", "llama.cpp-tools")
    assert packages_of_record({"build": {"id": "26ed23f8dacf352f", "source": "llama-cpp-python-0.3.36"}}) == ()
    assert packages_of_record(None) == ()


def test_the_purge_unholds_and_removes_only_what_the_packages_alone_kept():
    script = purge_script(["libllama0", "llama.cpp-tools"])
    assert run(f"bash -n <<'EOF'\n{script}\nEOF").returncode == 0
    assert "apt-mark unhold libllama0 llama.cpp-tools" in script
    assert "apt-get purge -y -q libllama0 llama.cpp-tools" in script
    assert 'comm -13 "$t/before" "$t/after"' in script  # autoremovable before the purge stays


def test_the_reinstall_does_nothing_for_a_compiled_build(tmp_path: Path):
    build = tmp_path / "26ed23f8dacf352f"
    build.mkdir()
    (build / "build.json").write_text('{"backend": "cpu", "source": "llama-cpp-python-0.3.36-832db0699007"}\n')
    (tmp_path / "build").symlink_to(build)
    proc = run(reinstall_script(str(tmp_path / "build")))
    assert proc.returncode == 0 and proc.stderr == ""
    assert run(reinstall_script(str(tmp_path / "no-such-link"))).returncode == 0


def test_a_kept_distro_build_without_its_debs_fails_before_anything_is_put_back(tmp_path: Path):
    build = tmp_path / "llama.cpp" / "distro-0123456789ab"
    (build / "debs").mkdir(parents=True)
    (build / "build.json").write_text(json.dumps(RECORD, sort_keys=True) + "\n")
    layout = Layout(unit=str(tmp_path / "unit"), env=str(tmp_path / "env"), last_good=str(tmp_path / "last-good"),
                    current=str(tmp_path / "llama.cpp" / "current"), api_key=str(tmp_path / "key"),
                    record=str(tmp_path / "deployed.json"))  # fmt: skip
    good = Path(layout.last_good)
    good.mkdir()
    (good / "digest").write_text("d1\n")
    (good / "build").symlink_to(build)
    (good / "unit").write_text("unit v1\n")
    Path(layout.unit).write_text("unit v2\n")
    proc = run(restore_script(layout))
    assert proc.returncode != 0
    assert f"lemfleet: the kept distro build {build} has no .debs to reinstall" in proc.stderr
    assert Path(layout.unit).read_text() == "unit v2\n"  # nothing else was put back
    assert not Path(layout.current).exists()


def _deb(folder: Path, package: str) -> None:
    """A minimal real .deb named ``package`` (dpkg-deb reads its Package field back)."""
    root = folder / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: lemfleet <lemfleet@localhost>\n"
        "Description: test\n"
    )
    subprocess.run(["dpkg-deb", "-b", str(root), str(folder / f"{package}_1.0_all.deb")], check=True,
                   capture_output=True)  # fmt: skip


def _failed_switch(tmp_path: Path, kept: Mapping[str, object], kept_debs: list[str], apt_fails: bool = False):
    """A failed gate's restore: ``current`` leads to a failed distro build (libllama0, llama.cpp-tools), the last
    good state to ``kept``. apt-get and apt-mark are stand-ins on PATH that log their arguments: what they are
    asked to purge is the point here; the test bed runs the real ones (tests/testbed/test_distro_source.py)."""
    builds = tmp_path / "llama.cpp"
    failed, good_build = builds / "distro-failed", builds / "kept"
    for build, record, debs in ((failed, RECORD, ["libllama0", "llama.cpp-tools"]), (good_build, kept, kept_debs)):
        (build / "debs").mkdir(parents=True)
        (build / "build.json").write_text(json.dumps(record, sort_keys=True) + "\n")
        for name in debs:
            _deb(build / "debs", name)
    (builds / "current").symlink_to(failed)
    layout = Layout(unit=str(tmp_path / "unit"), env=str(tmp_path / "env"), last_good=str(tmp_path / "last-good"),
                    current=str(builds / "current"), api_key=str(tmp_path / "key"),
                    record=str(tmp_path / "deployed.json"))  # fmt: skip
    good = Path(layout.last_good)
    good.mkdir()
    (good / "digest").write_text("d1\n")
    (good / "build").symlink_to(good_build)
    tools = tmp_path / "bin"
    tools.mkdir()
    log = tmp_path / "apt.log"
    # dpkg-query answers "installed at that version", so the kept build's reinstall has nothing to install.
    answer = "printf 'ii |1.0'"
    for tool in ("apt-get", "apt-mark", "dpkg", "dpkg-query"):
        fails = "exit 100" if apt_fails and tool == "apt-get" else answer if tool == "dpkg-query" else "exit 0"
        (tools / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\ncase "$*" in *-s*) exit 0 ;; esac\n{fails}\n')
        (tools / tool).chmod(0o755)
    proc = subprocess.run(["bash", "-c", f'PATH={tools}:"$PATH"\n' + restore_script(layout)], capture_output=True,
                          text=True, check=False, timeout=60)  # fmt: skip
    assert Path(layout.current).resolve() == good_build
    return proc, (log.read_text() if log.exists() else "")


def test_a_failed_switch_from_a_compiled_build_purges_the_packages_it_installed(tmp_path: Path):
    compiled = {"backend": "cpu", "source": "llama-cpp-python-0.3.36-832db0699007"}
    proc, log = _failed_switch(tmp_path, compiled, [])
    assert proc.returncode == 0, proc.stderr
    assert "apt-mark unhold libllama0 llama.cpp-tools" in log
    assert "apt-get purge -y -q libllama0 llama.cpp-tools" in log


def test_a_failed_switch_to_more_packages_purges_only_those_the_kept_build_does_not_name(tmp_path: Path):
    proc, log = _failed_switch(tmp_path, RECORD, ["libllama0"])
    assert proc.returncode == 0, proc.stderr
    purged = [line for line in log.splitlines() if line.startswith("apt-get purge")]
    assert purged == ["apt-get purge -y -q llama.cpp-tools"], log
    assert "dpkg -i" not in log  # the kept libllama0 was installed at its version already


def test_a_purge_that_fails_is_reported_and_the_restore_goes_on(tmp_path: Path):
    compiled = {"backend": "cpu", "source": "llama-cpp-python-0.3.36-832db0699007"}
    proc, _ = _failed_switch(tmp_path, compiled, [], apt_fails=True)
    assert proc.returncode == 0
    assert "the failed state's packages could not all be purged" in proc.stderr, proc.stderr


def test_a_manual_rollback_purges_nothing_before_its_gate(tmp_path: Path):
    layout = Layout(unit="u", env="e", last_good=str(tmp_path / "last-good"), current="c", api_key="k", record="r")
    assert "apt-get purge" in restore_script(layout)
    assert "apt-get purge" not in restore_script(layout, layout.previous)


def test_the_runtime_packages_apt_counts_as_pulled_in_are_read_by_name():
    fact = AutoInstalled()
    assert fact.command(("libgomp1", "libssl3")) == "apt-mark showauto libgomp1 libssl3 2>/dev/null || true"
    assert fact.process(["libgomp1", "", "libgomp1 "]) == ["libgomp1"]
