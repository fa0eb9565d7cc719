"""Issue 17's bar: time to serving on a bare sid host, distro source / compiled from a cold cache (<= 1/10).

    python bench/distro_vs_compile.py            # the distro source only; the compile is README's figure
    python bench/distro_vs_compile.py --cold     # also a real cold compile on a second bare sid host (~12+ min)

Each run boots bare sid test-bed hosts (hold /tmp/lemfleet-testbed.lock), deploys the demo model and removes the
hosts. Without ``--cold`` the denominator is the README's measured cold CPU compile on a 2-core test-bed host
(12 min, "first compile of llama-server (CPU) on a test-bed host"), said so in the output. With ``--cold`` the
compiled deploy runs with an empty build cache of its own (``llama_cpp_build_cache`` in a temporary directory), so
the controller's cache is neither read nor filled. Disk: what /usr grew by, and the build's own directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from common import PROJECT, deploy_args, pyinfra

sys.path.insert(0, str(PROJECT))

from lemfleet import testbed
from lemfleet.demo import demo_model

README_COLD_CPU_COMPILE_S = 12 * 60  # README "Measured": first compile of llama-server (CPU) on a test-bed host


def kib(rec: testbed.HostRecord, command: str) -> int:
    return int(testbed.ssh(rec, command).split()[0])


def serve(source_data: list[str]) -> tuple[float, int, int]:
    """Seconds from a bare sid host to a passing smoke test, /usr growth and build directory size (KiB)."""
    (rec,) = testbed.add(1, suite="sid")
    try:
        usr = kib(rec, "du -sxk /usr")
        model = demo_model()
        started = time.monotonic()
        _seconds, rc, out = pyinfra(*deploy_args(rec.name, "model_source=local", f"model_path={model}", *source_data))
        seconds = time.monotonic() - started
        assert rc == 0, out[-3000:]
        return seconds, kib(rec, "du -sxk /usr") - usr, kib(rec, "du -sk /opt/lemfleet/llama.cpp/current/")
    finally:
        testbed.remove(rec.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also measure a cold compile (minutes)")
    args = parser.parse_args()
    distro, distro_usr, distro_dir = serve(["llama_cpp_source=distro"])
    print(
        f"distro:   {distro:.1f} s to serving; /usr +{distro_usr / 1024:.1f} MiB; build dir {distro_dir / 1024:.1f} MiB"
    )
    if args.cold:
        with tempfile.TemporaryDirectory() as cache:
            compiled, usr, build = serve([f"llama_cpp_build_cache={cache}"])
        print(
            f"compiled: {compiled:.1f} s to serving (cold); /usr +{usr / 1024:.1f} MiB; "
            f"build dir {build / 1024:.1f} MiB"
        )
        where = "measured side by side"
    else:
        compiled = README_COLD_CPU_COMPILE_S
        where = "denominator: README's cold CPU compile on a 2-core test-bed host (12 min), not measured here"
    print(f"ratio: {distro / compiled:.3f} (bar: <= 0.1; {where})")


if __name__ == "__main__":
    main()
