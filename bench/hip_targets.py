"""Issue bar: narrowing GPU_TARGETS to the detected gfx cuts the HIP build to at most 1/3 of an all-targets build.

    python bench/hip_targets.py [--sample 6]

On a Debian sid test-bed host (HIP 6.4 from Debian's archive; booted for the bench and removed afterwards) that
presents an RX 7900 XTX (its recorded rocminfo in tests/fixtures/gpu, served by the host's own rocminfo:
lemfleet.testbed.add_gpu_host), whose packages the deploy's own detect, plan and drivers steps install
(lemfleet.testbed.gpuhost.prepare), the pinned llama.cpp is configured twice with the plan's own cmake flags and
the build script's HIPCXX/HIP_PATH:

- narrowed: GPU_TARGETS as the plan sets it, the detected gfx1100;
- all targets: every gfx target ROCm's libraries ship kernels for (lemfleet.roles.platform_amd.ROCM_GFX, the list
  llama.cpp's own ROCm container image builds for), as a build meant for any AMD GPU must be.

A whole all-targets build is hours on two cores, so the two are compared on a sample of ggml-hip's HIP translation
units (every Nth of the compile database, sorted by path), each compiled one at a time with the exact command CMake
wrote for it, narrowed and all-targets alternating unit by unit so both see the same machine. It prints both sums,
their ratio, and the whole-build figures the sample implies, in core-minutes: the sums scaled to every HIP unit,
plus the part of the build that is the same for both (--common-core-minutes; the CPU build of the same tree took
12 min on two cores, so at most 24). A larger common part only brings the two closer, so the default is the upper
bound. Needs root.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

if __name__ == "__main__":
    from common import PROJECT

    sys.path.insert(0, str(PROJECT))

from lemfleet import testbed
from lemfleet.roles import llama_cpp
from lemfleet.roles.llama_sources import sdist_source
from lemfleet.roles.platform_amd import ROCM_GFX
from lemfleet.roles.settings_check import validate
from lemfleet.testbed import HostRecord, gpuhost

GPU = {"rocminfo": "rocminfo/rx7900xtx-gfx1100.txt"}  # ROCm/ROCm#3949
TREES = "/opt/lemfleet/bench-hip"


def configure(rec: HostRecord, src: str, flags: tuple[str, ...], targets: tuple[str, ...], name: str) -> str:
    """A configured tree for ``targets``; its path."""
    tree = f"{TREES}/{name}"
    wanted = [f for f in flags if not f.startswith("-DGPU_TARGETS=")]
    wanted += [f"-DGPU_TARGETS={';'.join(targets)}", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"]
    args = " ".join(shlex.quote(f) for f in wanted)
    testbed.ssh(rec, f"rm -rf {tree} && {llama_cpp.HIP_CONFIGURE_ENV} cmake -S {src} -B {tree} {args} > /dev/null")
    return tree


def hip_units(rec: HostRecord, tree: str) -> dict[str, dict[str, str]]:
    """ggml-hip's translation units in the tree's compile database, by source path."""
    entries = json.loads(testbed.ssh(rec, f"cat {tree}/compile_commands.json"))
    return {e["file"]: e for e in entries if "/ggml-cuda/" in e["file"] and e["file"].endswith(".cu")}


def timed_compile(rec: HostRecord, entry: dict[str, str]) -> float:
    """Seconds one compile takes on the host, timed there, with the command CMake wrote for it."""
    script = f"cd {shlex.quote(entry['directory'])} && s=$(date +%s%N) && {entry['command']} && "
    script += "echo $(( $(date +%s%N) - s ))"
    return int(testbed.ssh(rec, f"sh -c {shlex.quote(script)}", timeout=7200).strip()) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=6, help="HIP translation units compiled per configuration")
    parser.add_argument(
        "--common-core-minutes", type=float, default=24.0, help="the build's part that is the same for both"
    )
    args = parser.parse_args()

    prepared = gpuhost.prepare("sid", GPU, build_packages=True)
    rec = prepared.rec
    try:
        plan = prepared.plan
        if plan.backend != "hip":
            print(f"the plan is {plan.backend}, not hip: {plan.reasons}", file=sys.stderr)
            return 1
        src = gpuhost.push_source(rec, sdist_source(validate({})))
        every = tuple(sorted(ROCM_GFX))
        narrowed = configure(rec, src, plan.cmake_flags, plan.gpu_targets, "narrowed")
        wide = configure(rec, src, plan.cmake_flags, every, "all")
        units_narrowed, units_wide = hip_units(rec, narrowed), hip_units(rec, wide)
        names = sorted(units_narrowed)
        step = len(names) / args.sample
        sample = [names[int(i * step)] for i in range(args.sample)]
        print(f"narrowed: GPU_TARGETS={';'.join(plan.gpu_targets)}; all: GPU_TARGETS={';'.join(every)}")
        print(f"{len(names)} HIP units; sample of {len(sample)} (every {step:.1f}th)")
        one_total = all_total = 0.0
        for name in sample:
            one = timed_compile(rec, units_narrowed[name])
            wide_s = timed_compile(rec, units_wide[name])
            one_total += one
            all_total += wide_s
            print(f"  {name.split('/ggml-cuda/')[1]:<60} {one:7.1f} s {wide_s:8.1f} s  {wide_s / one:5.1f}x")
        ratio = one_total / all_total
        print(f"sample: narrowed {one_total:.0f} s, all targets {all_total:.0f} s: narrowed = {ratio:.3f}x")
        scale = len(names) / len(sample)
        whole_one = args.common_core_minutes + one_total * scale / 60
        whole_all = args.common_core_minutes + all_total * scale / 60
        print(
            f"whole build implied, core-minutes (x{scale:.1f} units + {args.common_core_minutes:.0f} common): "
            f"narrowed {whole_one:.0f} min, all targets {whole_all:.0f} min: narrowed = {whole_one / whole_all:.3f}x "
            f"(bar <= 0.333x)"
        )
        return 0 if whole_one / whole_all <= 1 / 3 else 2
    finally:
        testbed.remove(rec.name)


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench/hip_targets.py: {time.monotonic() - started:.0f} s")
    sys.exit(code)
