"""The build script and build id, from plans built on recorded host facts."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from lemfleet.roles.detect import facts_from_sections
from lemfleet.roles.facts.host import split_sections
from lemfleet.roles.llama_cpp import HIP_CONFIGURE_ENV, build_id, build_script
from lemfleet.roles.llama_sources import Source
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.settings_check import validate

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "host" / "debian12-nspawn-probe.txt"
FACTS = facts_from_sections(split_sections(FIXTURE.read_text().splitlines()))
SOURCE = Source("pypi-sdist", "llama-cpp-python-0.3.36-832db0699007", sha256="8" * 64)
PLAN = plan_host(FACTS, validate({}), ModelInfo("tiny", 1))


def test_build_id_is_stable_and_follows_what_shapes_the_binary():
    assert build_id(SOURCE, PLAN) == build_id(SOURCE, PLAN)
    for changed in (
        dataclasses.replace(PLAN, backend="vulkan"),
        dataclasses.replace(PLAN, gpu_targets=("gfx1100",)),
        dataclasses.replace(PLAN, cmake_flags=(*PLAN.cmake_flags, "-DGGML_BLAS=ON")),
        dataclasses.replace(PLAN, build_env={"CUDAHOSTCXX": "g++-13"}),
        dataclasses.replace(PLAN, os_version="13"),
        dataclasses.replace(PLAN, cpu_features=("avx2",)),
    ):
        assert build_id(SOURCE, changed) != build_id(SOURCE, PLAN)
    # Server flags are not part of the build.
    assert build_id(SOURCE, dataclasses.replace(PLAN, ctx_size=1024, threads=1)) == build_id(SOURCE, PLAN)


def test_build_script_is_valid_shell_and_builds_only_llama_server():
    script = build_script("abc", "/opt/lemfleet/src/x", PLAN, SOURCE, 2)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    assert "-t llama-server -j 2" in script
    assert "mv -T /opt/lemfleet/llama.cpp/abc.new /opt/lemfleet/llama.cpp/abc" in script
    assert "tail -n 40" in script  # a failure shows the build log's tail
    assert "ldd" not in script  # a CPU build needs no backend library


def test_the_build_runs_unprivileged_and_no_build_output_runs_as_root():
    script = build_script("abc", "/opt/lemfleet/src/x", dataclasses.replace(PLAN, backend="vulkan"), SOURCE, 2)
    lines = script.splitlines()
    # The build tree belongs to the build user; cmake and the build run as that user.
    assert "install -d -o lemfleet-build -g lemfleet-build -m 755 /opt/lemfleet/build/abc" in script
    steps = next(line for line in lines if "cmake -S" in line).removeprefix("(").split(") >")[0].split("&&")
    assert len(steps) == 2 and all(step.strip().startswith("runuser -u lemfleet-build -- env ") for step in steps)
    # Everything that runs the new binary (--version, ldd) runs as the build user.
    for line in lines:
        if "bin/llama-server --version" in line or "ldd " in line:
            assert line.startswith("runuser -u lemfleet-build -- "), line
    # The build's record is written when it finishes, before it is renamed into place.
    record = "( cd /opt/lemfleet/llama.cpp/abc.new && sha256sum bin/llama-server build.json > SHA256SUMS )"
    assert record in lines and lines.index(record) < lines.index("mv -T /opt/lemfleet/llama.cpp/abc.new "
                                                                  "/opt/lemfleet/llama.cpp/abc")  # fmt: skip


def test_a_gpu_build_must_link_its_backend_library():
    script = build_script("abc", "/src", dataclasses.replace(PLAN, backend="vulkan"), SOURCE, 2)
    assert "ldd /opt/lemfleet/llama.cpp/abc.new/bin/llama-server | grep -q libvulkan.so" in script
    assert "runuser -u lemfleet-build -- ldd" in script
    check = next(line for line in script.splitlines() if "ldd" in line)
    # The check runs before the build is renamed into place.
    assert script.index(check) < script.index("mv -T /opt/lemfleet/llama.cpp/abc.new")


def test_a_hip_build_configures_with_the_compiler_and_root_hipconfig_reports(tmp_path: Path):
    hip = dataclasses.replace(PLAN, backend="hip", gpu_targets=("gfx1100",))
    script = build_script("abc", "/src", hip, SOURCE, 2)
    configure = next(line for line in script.splitlines() if " cmake -S " in line)
    assert configure.startswith("( runuser -u lemfleet-build -- env ")
    assert f" {HIP_CONFIGURE_ENV} cmake -S /src" in configure
    assert HIP_CONFIGURE_ENV not in build_script("abc", "/src", PLAN, SOURCE, 2)
    # What the prefix gives cmake, with a hipconfig that prints as Debian's does (no trailing newline).
    fake = tmp_path / "hipconfig"
    fake.write_text('#!/bin/sh\ncase "$1" in -l) printf /usr/lib/llvm-21/bin;; -R) printf /usr;; esac\n')
    fake.chmod(0o755)
    seen = subprocess.run(
        ["sh", "-c", f"{HIP_CONFIGURE_ENV} sh -c 'echo \"$HIPCXX|$HIP_PATH\"'"],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert seen == "/usr/lib/llvm-21/bin/clang|/usr\n"
