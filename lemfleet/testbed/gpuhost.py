"""Test-bed hosts prepared as a GPU host would be: the drivers step's packages, then lemfleet's own build script.

The hosts have no GPU. A host's facts are its own (OS, CPU, memory, container: the real probe over SSH) with
the GPU part taken from a recorded GPU host's outputs, so the plan chooses the backend, packages and cmake flags
itself, and what gets installed and compiled is what a deploy to that GPU host would install and compile.
Used by the slow GPU build tests (tests/testbed/test_gpu_builds.py) and the HIP targets bench
(bench/hip_targets.py).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from lemfleet.roles import llama_cpp
from lemfleet.roles.build_ops import BUILD_USER
from lemfleet.roles.detect import TARGET_PATHS, facts_from_sections
from lemfleet.roles.drivers import DriverPlan, plan_drivers, target_from_facts
from lemfleet.roles.facts.gpu_pci import GpuReport
from lemfleet.roles.facts.host import probe_command, split_sections
from lemfleet.roles.hostinfo import HostFacts
from lemfleet.roles.ops import USER_COMMENT
from lemfleet.roles.plan import HostPlan, ModelInfo, plan_host
from lemfleet.roles.sources import Source
from lemfleet.testbed.bed import ssh
from lemfleet.testbed.hosts import HostRecord
from lemfleet.testbed.paths import SSH_CONFIG
from lemfleet.testbed.paths import run as run_here

APT_TIMEOUT = 3600
BUILD_TIMEOUT = 4 * 3600


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A host with one backend's runtime and build packages installed as the drivers step plans them."""

    rec: HostRecord
    suite: str
    facts: HostFacts
    settings: Mapping[str, Any]
    plan: HostPlan
    drivers: DriverPlan


def remote(rec: HostRecord, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as root on the host; the caller reads its status and both streams."""
    return run_here(["ssh", "-F", str(SSH_CONFIG), rec.name, command], check=False, timeout=timeout)


def push(rec: HostRecord, local: Path, dest: str) -> None:
    run_here(["scp", "-q", "-F", str(SSH_CONFIG), str(local), f"{rec.name}:{dest}"], timeout=900)


def host_facts(rec: HostRecord, gpu: GpuReport) -> HostFacts:
    """The host's own facts from the real probe, with the GPUs and runtime of a recorded GPU host."""
    sections = split_sections(ssh(rec, probe_command(TARGET_PATHS)).splitlines())
    gpus, runtime = gpu
    return facts_from_sections(sections, gpus, runtime)


def apt_install(rec: HostRecord, packages: Sequence[str]) -> None:
    """Install as the drivers and llama_cpp steps do: pyinfra's apt.packages with no_recommends."""
    names = " ".join(shlex.quote(p) for p in packages)
    ssh(
        rec,
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {names}",
        timeout=APT_TIMEOUT,
    )


def installed(rec: HostRecord, *patterns: str) -> set[str]:
    """Names of installed packages matching dpkg-query ``patterns``."""
    quoted = " ".join(shlex.quote(p) for p in patterns)
    out = remote(rec, f"dpkg-query -W -f='${{db:Status-Abbrev}} ${{Package}}\\n' {quoted}").stdout
    return {line.split()[-1] for line in out.splitlines() if line.startswith("ii")}


def prepare(rec: HostRecord, suite: str, gpu: GpuReport, settings: Mapping[str, Any]) -> Prepared:
    """Plan the host, then apply the drivers plan's apt sources and packages as the drivers step does."""
    facts = host_facts(rec, gpu)
    plan = plan_host(facts, settings, ModelInfo("lemfleet-tiny-gemma3"))
    kernel = ssh(rec, "uname -r").strip()
    drivers = plan_drivers(target_from_facts(facts, plan.backend, kernel_release=kernel), settings)
    # Debian's own archive, whose keyring every host has: no keys, keyring packages or pins to fetch here.
    assert not (drivers.keys or drivers.keyring_debs or drivers.pins), drivers.describe()
    assert not drivers.kernel_packages, f"a container host got a kernel driver:\n{drivers.describe()}"
    for source in drivers.sources:
        ssh(rec, f"printf %s {shlex.quote(source.deb822())} > {source.path}")
    ssh(rec, "apt-get update -q", timeout=APT_TIMEOUT)
    apt_install(rec, drivers.packages)
    return Prepared(rec, suite, facts, settings, plan, drivers)


def push_source(rec: HostRecord, source: Source) -> str:
    """The pinned llama.cpp tree on the host, pushed, verified and unpacked as the llama_cpp step does."""
    src = llama_cpp.source_dir(source)
    if remote(rec, f"test -f {src}/CMakeLists.txt").returncode == 0:
        return src
    assert source.archive is not None and source.sha256
    archive = f"{llama_cpp.ROOT}/src/{source.archive.name}"
    ssh(rec, f"mkdir -p {llama_cpp.ROOT}/src")
    push(rec, source.archive, archive)
    depth = len([part for part in source.strip_prefix.split("/") if part])
    ssh(
        rec,
        f"echo '{source.sha256}  {archive}' | sha256sum -c --quiet - && rm -rf {src}.new && mkdir -p {src}.new && "
        f"tar -xzf {archive} -C {src}.new --strip-components={depth} {shlex.quote(source.strip_prefix)} && "
        f"mv -T {src}.new {src}",
        timeout=900,
    )
    return src


def compile_server(rec: HostRecord, plan: HostPlan, source: Source) -> str:
    """Compile llama-server with lemfleet's build script (once per build id); the installed binary's path."""
    apt_install(rec, llama_cpp.BUILD_PACKAGES + llama_cpp.RUNTIME_PACKAGES)
    src = push_source(rec, source)
    bid = llama_cpp.build_id(source, plan)
    binary = llama_cpp.installed_binary(bid)
    if remote(rec, f"test -x {binary}").returncode != 0:
        # The build runs as the unprivileged build user, as the llama_cpp step creates it.
        user = shlex.quote(BUILD_USER)
        ssh(rec, f"id {user} >/dev/null 2>&1 || useradd --system --user-group --comment {shlex.quote(USER_COMMENT)} "
                 f"--home-dir {llama_cpp.ROOT}/build --no-create-home --shell /usr/sbin/nologin {user}")  # fmt: skip
        script = llama_cpp.build_script(bid, src, plan, source, plan.cpu_logical_cores)
        started = time.monotonic()
        ssh(rec, f"sh -c {shlex.quote(script)}", timeout=BUILD_TIMEOUT)
        minutes = (time.monotonic() - started) / 60
        print(f"{plan.backend} build {bid} on {rec.name} ({rec.suite}): {minutes:.1f} min")
    return binary


def build_record(rec: HostRecord, binary: str) -> dict[str, Any]:
    """The build.json the build script writes beside the binary."""
    record: dict[str, Any] = json.loads(ssh(rec, f"cat {PurePosixPath(binary).parent.parent}/build.json"))
    return record
