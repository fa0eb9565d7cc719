"""Build once and build trust on real hosts, with a tiny source tree whose compile takes seconds.

The tree is a CMake project that builds a ``llama-server`` printing who built it and who runs it, so
everything around the compile is lemfleet's real path: the leader chosen among bare hosts deployed
together, the build as the unprivileged build user, the sha256 recorded on the building host, the
controller's cache with its manifest, and each receiving host's check. The default CPU build is not
touched (the tiny tree has its own build id), and neither is the controller's own build cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lemfleet import testbed
from lemfleet.testbed import HostRecord
from tests.testbed.conftest import pyinfra

CMAKE = """cmake_minimum_required(VERSION 3.16)
project(tiny C)
execute_process(COMMAND id -un OUTPUT_VARIABLE BUILT_BY OUTPUT_STRIP_TRAILING_WHITESPACE)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-server main.c)
target_compile_definitions(llama-server PRIVATE BUILT_BY="${BUILT_BY}" VARIANT="@VARIANT@")
"""
MAIN = r"""#include <stdio.h>
#include <unistd.h>
int main(void) { printf("tiny %s built by %s, run as uid %d\n", VARIANT, BUILT_BY, (int)getuid()); return 0; }
"""


def tiny_source(folder: Path, variant: str) -> tuple[Path, str]:
    """A .tar.gz of the tiny tree (one top folder, as llama.cpp's tarballs have) and its sha256."""
    archive = folder / f"tiny-{variant}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in (("CMakeLists.txt", CMAKE.replace("@VARIANT@", variant)), ("main.c", MAIN)):
            data = text.encode()
            info = tarfile.TarInfo(f"tiny-{variant}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def build(hosts: list[HostRecord], archive: Path, sha: str, cache: Path, *options: str, timeout: float = 1200):
    limits = [arg for rec in hosts for arg in ("--limit", rec.name)]
    return pyinfra(
        "inventories/testbed.py", "tests/testbed/deploys/build_only.py", "-y", *options, *limits,
        "--data", "llama_cpp_source=tarball", "--data", f"llama_cpp_tarball={archive}",
        "--data", f"llama_cpp_tarball_sha256={sha}", "--data", f"llama_cpp_build_cache={cache}",
        timeout=timeout,
    )  # fmt: skip


def the_entry(cache: Path) -> tuple[str, dict[str, Any]]:
    (manifest,) = cache.glob("*.json")
    TINY_BUILDS.add(manifest.stem)
    return manifest.stem, json.loads(manifest.read_text())


LIST = "ls -1A /opt/lemfleet/llama.cpp /opt/lemfleet/build; readlink /opt/lemfleet/llama.cpp/current"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build-cache")


@pytest.fixture(scope="module", autouse=True)
def leave_hosts_as_they_were(bed: list[HostRecord]) -> Iterator[None]:
    """The other test-bed tests share these hosts: the tiny builds, and what they made, go afterwards."""
    fresh = {rec.name: testbed.ssh(rec, "[ -e /opt/lemfleet ] && echo no || echo yes").strip() == "yes" for rec in bed}
    links = {rec.name: testbed.ssh(rec, "readlink /opt/lemfleet/llama.cpp/current || true").strip() for rec in bed}
    user = {rec.name: testbed.ssh(rec, "getent passwd lemfleet-build || true").strip() for rec in bed}
    yield
    for rec in bed:
        if fresh[rec.name]:
            testbed.ssh(rec, "rm -rf /opt/lemfleet")
        else:
            for tiny in TINY_BUILDS:
                testbed.ssh(rec, f"rm -rf /opt/lemfleet/llama.cpp/{tiny}")
            if links[rec.name]:
                testbed.ssh(rec, f"ln -sfn {links[rec.name]} /opt/lemfleet/llama.cpp/current")
            else:
                testbed.ssh(rec, "rm -f /opt/lemfleet/llama.cpp/current /opt/lemfleet/llama.cpp/previous")
        if not user[rec.name]:
            testbed.ssh(rec, "userdel lemfleet-build 2>/dev/null || true")


TINY_BUILDS: set[str] = set()


def test_bare_hosts_deployed_together_compile_once_and_receive_the_build_verified(bed, cache: Path, tmp_path: Path):
    archive, sha = tiny_source(tmp_path, "a")
    had_cmake = {rec.name for rec in bed if testbed.ssh(rec, "command -v cmake || true").strip()}
    had_user = {rec.name for rec in bed if testbed.ssh(rec, "getent passwd lemfleet-build || true").strip()}
    run = build(bed, archive, sha, cache)
    assert run.returncode == 0, run.output[-4000:]
    bid, manifest = the_entry(cache)
    leader = manifest["built_on"]
    assert manifest["recorded_on"] == "host" and leader in {rec.name for rec in bed}
    # One compile: the others received it, and got neither the build user nor the compilers.
    assert run.output.count(f"compiled by {leader}, received through the controller") == len(bed) - 1
    for rec in bed:
        if rec.name != leader:
            if rec.name not in had_user:
                assert not testbed.ssh(rec, "getent passwd lemfleet-build || true").strip(), rec.name
            if rec.name not in had_cmake:
                assert not testbed.ssh(rec, "command -v cmake || true").strip(), rec.name
        build_dir = f"/opt/lemfleet/llama.cpp/{bid}"
        # Every host has the leader's files, checked against the sums the leader recorded.
        assert testbed.ssh(rec, f"cd {build_dir} && sha256sum --check --strict --quiet SHA256SUMS && echo ok") == "ok\n"
        assert testbed.ssh(rec, "readlink /opt/lemfleet/llama.cpp/current") == f"{build_dir}\n"
        # Built by the build user, and its --version never ran as root (the leader's log).
        log = testbed.ssh(rec, f"cat {build_dir}/build.log")
        assert "tiny a built by lemfleet-build, run as uid " in log and "run as uid 0\n" not in log


@pytest.mark.parametrize("mode", ["--serial", "--no-wait"])
def test_one_compile_when_pyinfra_runs_host_by_host_or_without_waiting(bed, tmp_path: Path, mode: str):
    """``--serial`` runs the leader's whole deploy first; under ``--no-wait`` the others wait for its publish."""
    archive, sha = tiny_source(tmp_path, mode.strip("-"))
    own_cache = tmp_path / "cache"
    run = build(bed, archive, sha, own_cache, mode, timeout=400)  # a follower waiting for a leader never run: fail
    assert run.returncode == 0, run.output[-4000:]
    _, manifest = the_entry(own_cache)
    received = f"compiled by {manifest['built_on']}, received through the controller"
    assert run.output.count(received) == len(bed) - 1


def test_a_tampered_artifact_is_refused_and_the_host_is_left_as_it_was(bed, cache: Path, tmp_path: Path):
    first, second = bed[0], bed[1]
    archive, sha = tiny_source(tmp_path, "b")
    own_cache = tmp_path / "cache"
    run = build([first], archive, sha, own_cache)
    assert run.returncode == 0, run.output[-4000:]
    bid, manifest = the_entry(own_cache)
    bundle = own_cache / f"{bid}.tar.gz"
    good = bundle.read_bytes()
    bundle.write_bytes(good + b"tampered")
    before = testbed.ssh(
        second, "ls -la /opt/lemfleet/llama.cpp /opt/lemfleet/build; readlink /opt/lemfleet/llama.cpp/current"
    )
    run = build([second], archive, sha, own_cache)
    assert run.returncode != 0
    assert f"not the {manifest['bundle_sha256']} recorded on {first.name} when it was built" in run.output
    assert "refused, nothing was installed" in run.output
    after = testbed.ssh(
        second, "ls -la /opt/lemfleet/llama.cpp /opt/lemfleet/build; readlink /opt/lemfleet/llama.cpp/current"
    )
    assert after == before
    # With the artifact as its building host recorded it, the same host receives it.
    bundle.write_bytes(good)
    run = build([second], archive, sha, own_cache)
    assert run.returncode == 0, run.output[-4000:]
    assert testbed.ssh(second, "readlink /opt/lemfleet/llama.cpp/current") == f"/opt/lemfleet/llama.cpp/{bid}\n"
