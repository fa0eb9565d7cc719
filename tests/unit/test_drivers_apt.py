"""Real apt reads the rendered sources and pins, in a private apt tree (nothing is fetched).

``apt-get update --print-uris`` parses every source file and prints the
index URLs it would fetch; ``apt-cache policy`` parses every preferences file
and complains on stderr about anything it does not understand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lemfleet.roles.drivers import DriverPlan, DriverTarget, plan_drivers
from lemfleet.roles.drivers.cuda import KEEP_DRIVER_PIN, NVIDIA_PIN

# apt itself reads the rendered files back, which needs a Debian-family controller; CI's always is one.
pytestmark = pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt to read the rendered files back")


def apt_tree(tmp_path: Path, plans: list[DriverPlan]) -> dict[str, str]:
    parts, prefs, lists = tmp_path / "parts", tmp_path / "prefs", tmp_path / "lists"
    for folder in (parts, prefs, lists / "partial", tmp_path / "cache"):
        folder.mkdir(parents=True)
    (tmp_path / "status").write_text("")
    for plan in plans:
        for source in plan.sources:
            (parts / f"{source.name}.sources").write_text(source.deb822())
        for pin in plan.pins:
            (prefs / pin.name).write_text(pin.render())
    config = tmp_path / "apt.conf"
    config.write_text(
        f'Dir::Etc::SourceList "/dev/null";\nDir::Etc::SourceParts "{parts}";\n'
        f'Dir::Etc::Preferences "/dev/null";\nDir::Etc::PreferencesParts "{prefs}";\n'
        f'Dir::State::Lists "{lists}";\nDir::State::status "{tmp_path}/status";\n'
        f'Dir::Cache "{tmp_path}/cache";\nAPT::Architecture "amd64";\n'
        'Debug::NoLocking "true";\n'
    )
    return {**os.environ, "APT_CONFIG": str(config), "LC_ALL": "C"}


def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_apt_reads_the_rocm_sources(tmp_path: Path) -> None:
    plan = plan_drivers(DriverTarget("ubuntu", "24.04", "noble", "hip"), {})
    env = apt_tree(tmp_path, [plan])
    done = run(env, "apt-get", "update", "--print-uris")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    uris = {line.split()[0].strip("'") for line in done.stdout.splitlines()}
    for base in (
        "https://repo.radeon.com/amdgpu/30.30.3/ubuntu",
        "https://repo.radeon.com/rocm/apt/7.2.3",
        "https://repo.radeon.com/graphics/7.2.3/ubuntu",
    ):
        assert f"{base}/dists/noble/InRelease" in uris
        assert f"{base}/dists/noble/main/binary-amd64/Packages.xz" in uris
    # Architectures: amd64 keeps apt away from i386 indexes.
    assert not any("binary-i386" in uri for uri in uris)


def test_apt_reads_the_debian_nonfree_source(tmp_path: Path) -> None:
    target = DriverTarget("debian", "13", "trixie", "cuda")
    plan = plan_drivers(target, {"drivers_cuda_source": "distro"})
    env = apt_tree(tmp_path, [plan])
    done = run(env, "apt-get", "update", "--print-uris")
    assert done.returncode == 0, done.stderr
    uris = {line.split()[0].strip("'") for line in done.stdout.splitlines()}
    for suite in ("trixie", "trixie-updates"):
        for component in ("contrib", "non-free", "non-free-firmware"):
            url = f"http://deb.debian.org/debian/dists/{suite}/{component}/binary-amd64/Packages.xz"
            assert url in uris
    assert not any("/main/" in uri for uri in uris)


def test_apt_accepts_every_pin(tmp_path: Path) -> None:
    rocm = plan_drivers(DriverTarget("ubuntu", "24.04", "noble", "hip"), {})
    keep = DriverPlan("cuda", "nvidia-repo", pins=(NVIDIA_PIN, KEEP_DRIVER_PIN))
    env = apt_tree(tmp_path, [rocm, keep])
    done = run(env, "apt-cache", "policy")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_the_check_itself_catches_a_bad_pin(tmp_path: Path) -> None:
    env = apt_tree(tmp_path, [])
    (tmp_path / "prefs" / "bad").write_text("Package: *\nPin: orgin repo.radeon.com\nPin-Priority: 600\n")
    done = run(env, "apt-cache", "policy")
    assert done.returncode != 0 or done.stderr != ""
