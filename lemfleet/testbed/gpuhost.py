"""Test-bed hosts prepared as a GPU host is, by the deploy's own steps: drivers, then llama-server's build.

Each host presents a recorded GPU (``recorded_gpu.add_gpu_host``: the GPU's tools on PATH, a KFD topology), so
its facts are its own, read over SSH by lemfleet's probes, and the plan chooses backend, packages and cmake flags
itself. Nothing is installed or compiled by hand:

- ``prepare`` runs the deploy's first steps (detect, plan, drivers: ``tests/testbed/deploys/gpu_drivers.py``)
  with pyinfra, so the packages are those the drivers step installs, the way it installs them;
- ``deploy`` runs the whole ``deploy.py``, which compiles llama-server for the plan, writes the unit, starts it
  and gates it. There is no GPU, so the gate's offload check fails the host ("no GPU computed") and, on a first
  deploy, stops and disables the unit; the build stays installed and ``current`` points at it.

Used by the slow GPU build tests (tests/testbed/test_gpu_builds.py) and the HIP targets bench
(bench/hip_targets.py). The whole path with its failure and rollback is tests/testbed/test_gpu_deploy_slow.py.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lemfleet.roles import llama_cpp
from lemfleet.roles.detect import TARGET_PATHS, facts_from_sections
from lemfleet.roles.drivers import DriverPlan, plan_drivers, target_from_facts
from lemfleet.roles.facts.gpu import PROBE_COMMAND, parse_probe
from lemfleet.roles.facts.host import probe_command, split_sections
from lemfleet.roles.hostinfo import HostFacts
from lemfleet.roles.llama_sources import Source
from lemfleet.roles.plan import HostPlan, ModelInfo, plan_host
from lemfleet.roles.settings_check import validate
from lemfleet.testbed.bed import ssh
from lemfleet.testbed.hosts import HostRecord
from lemfleet.testbed.paths import SSH_CONFIG
from lemfleet.testbed.paths import run as run_here
from lemfleet.testbed.recorded_gpu import Recording, add_gpu_host
from lemfleet.testbed.teardown import remove

PROJECT = Path(__file__).resolve().parents[2]
DRIVERS_DEPLOY = "tests/testbed/deploys/gpu_drivers.py"
APT_TIMEOUT = 3600
BUILD_TIMEOUT = 4 * 3600
CURRENT_BINARY = f"{llama_cpp.CURRENT}/bin/llama-server"


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A host presenting a recorded GPU, with its backend's packages installed by the drivers step."""

    rec: HostRecord
    suite: str
    data: tuple[str, ...]  # the --data items every run on this host gets
    facts: HostFacts
    settings: Mapping[str, Any]
    plan: HostPlan
    drivers: DriverPlan


@dataclasses.dataclass(frozen=True)
class Run:
    returncode: int
    output: str  # stdout and stderr


def remote(rec: HostRecord, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as root on the host; the caller reads its status and both streams."""
    return run_here(["ssh", "-F", str(SSH_CONFIG), rec.name, command], check=False, timeout=timeout)


def push(rec: HostRecord, local: Path, dest: str) -> None:
    run_here(["scp", "-q", "-F", str(SSH_CONFIG), str(local), f"{rec.name}:{dest}"], timeout=900)


def pyinfra(rec: HostRecord, deploy_file: str, data: Sequence[str], timeout: float = BUILD_TIMEOUT) -> Run:
    """``pyinfra inventories/testbed.py <deploy_file> -y --limit <host>`` with ``--data`` items, from the checkout."""
    args = [sys.executable, "-m", "pyinfra", "inventories/testbed.py", deploy_file, "-y", "--limit", rec.name]
    for item in data:
        args += ["--data", item]
    proc = subprocess.run(args, cwd=PROJECT, capture_output=True, text=True, timeout=timeout, check=False)
    return Run(proc.returncode, proc.stdout + proc.stderr)


def settings_from(data: Sequence[str]) -> dict[str, Any]:
    """The settings ``--data KEY=VALUE`` items give, parsed as pyinfra's CLI parses them, then checked."""
    values: dict[str, Any] = {}
    for item in data:
        key, _, value = item.partition("=")
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = {"true": True, "false": False}.get(value.lower(), value)
    return validate(values)


def host_facts(rec: HostRecord) -> HostFacts:
    """The host's facts from lemfleet's own probes over SSH: its OS, CPU and memory, and the GPU it presents."""
    sections = split_sections(ssh(rec, probe_command(TARGET_PATHS)).splitlines())
    gpus, runtime = parse_probe(ssh(rec, PROBE_COMMAND, timeout=120).splitlines())
    return facts_from_sections(sections, gpus, runtime)


def prepare(
    suite: str,
    recordings: Mapping[str, Recording],
    data: Sequence[str] = (),
    rc: Mapping[str, int] | None = None,
    build_packages: bool = False,
) -> Prepared:
    """Boot a host of ``suite`` presenting the recorded GPU, and run the deploy's detect, plan and drivers steps.

    ``build_packages`` also installs what the build step installs before it compiles (a bench's own configure).
    """
    settings = settings_from(data)
    rec = add_gpu_host(recordings, rc, suite=suite)
    try:
        facts = host_facts(rec)
        plan = plan_host(facts, settings, ModelInfo("lemfleet-tiny-gemma3"))
        kernel = ssh(rec, "uname -r").strip()
        drivers = plan_drivers(target_from_facts(facts, plan.backend, kernel_release=kernel), settings)
        extra = ["build_packages=true"] if build_packages else []
        run = pyinfra(rec, DRIVERS_DEPLOY, [*data, *extra], timeout=APT_TIMEOUT)
        if run.returncode != 0:
            raise RuntimeError(f"the drivers step failed on {rec.name}:\n{run.output[-4000:]}")
    except BaseException:
        remove(rec.name)  # the caller never gets the host, so it could not remove it
        raise
    return Prepared(rec, suite, tuple(data), facts, settings, plan, drivers)


def deploy(prepared: Prepared, *data: str, model: Path | None = None) -> Run:
    """The whole ``deploy.py`` on the host (compile included), with the tiny model when ``model`` is given."""
    items = [*prepared.data, *data]
    if model is not None:
        items += ["model_source=local", f"model_path={model}"]
    return pyinfra(prepared.rec, "deploy.py", items)


def installed(rec: HostRecord, *patterns: str) -> set[str]:
    """Names of installed packages matching dpkg-query ``patterns``."""
    quoted = " ".join(shlex.quote(p) for p in patterns)
    out = remote(rec, f"dpkg-query -W -f='${{db:Status-Abbrev}} ${{Package}}\\n' {quoted}").stdout
    return {line.split()[-1] for line in out.splitlines() if line.startswith("ii")}


def push_source(rec: HostRecord, source: Source) -> str:
    """The pinned llama.cpp tree on the host, for a bench that configures it by hand (bench/hip_targets.py).

    Pushed, checked against its sha256 and unpacked where the llama_cpp step keeps it; a deploy's build does
    this itself.
    """
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


def build_record(rec: HostRecord, binary: str = CURRENT_BINARY) -> dict[str, Any]:
    """The build.json the build script writes beside the binary."""
    record: dict[str, Any] = json.loads(ssh(rec, f"cat {Path(binary).parent.parent}/build.json"))
    return record
