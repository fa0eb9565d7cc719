"""Cached Debian root filesystems for test-bed hosts, made once with debootstrap.

A root filesystem is keyed by suite and package list, built into a temporary
directory through the apt proxy (so that its packages are cached too) and
renamed into place only when complete. Hosts never write to it: each gets an
overlay of its own.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from lemfleet.testbed.paths import CACHE_DIR, DEBIAN_MIRROR, PROXY_URL, log, retry, run

SUITES = ("bookworm", "trixie", "sid")
DEFAULT_SUITE = "bookworm"

# What a host needs to boot with systemd, be reached over SSH and be managed
# by pyinfra and testinfra (iproute2 gives `ss`, which testinfra's socket
# checks call). Everything else comes from apt at deploy time, through the proxy.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "iproute2",
    "procps",
    "ca-certificates",
    "curl",
    "xz-utils",
)
# sid's Release file is valid for a week only: apt refuses a mirror or snapshot older than that, as one can be here.
VALID_UNTIL_IGNORED = frozenset({"sid"})
COMPONENTS = ("main", "contrib", "non-free", "non-free-firmware")
ROOTFS_FORMAT = 1  # bump when the customisation below changes


def cache_key(suite: str) -> str:
    text = "\n".join([str(ROOTFS_FORMAT), suite, *sorted(PACKAGES), *COMPONENTS])
    return f"{suite}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def path_for(suite: str) -> Path:
    return CACHE_DIR / "rootfs" / cache_key(suite)


def ensure(suite: str = DEFAULT_SUITE) -> Path:
    """Return the cached root filesystem for ``suite``, building it if it is missing."""
    if suite not in SUITES:
        raise ValueError(f"suite={suite!r} is not supported; accepted: {', '.join(SUITES)}")
    final = path_for(suite)
    if (final / "etc" / "os-release").exists():
        return final
    building = final.with_name(final.name + ".building")
    log(f"building root filesystem {final.name} with debootstrap (first run only)")

    def attempt() -> None:
        shutil.rmtree(building, ignore_errors=True)
        building.parent.mkdir(parents=True, exist_ok=True)
        run(
            [
                "env",
                f"http_proxy={PROXY_URL}",
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                f"--components={','.join(COMPONENTS)}",
                suite,
                str(building),
                DEBIAN_MIRROR,
            ],
            timeout=1800,
        )

    retry(attempt, attempts=3, delay=10, what=f"debootstrap {suite}")
    _customise(building, suite)
    building.rename(final)
    return final


def _customise(root: Path, suite: str) -> None:
    """Make the tree a bootable, SSH-reachable host that owns none of its identity.

    Identity (hostname, machine id, SSH host keys, authorized key, addresses)
    is written per host into its overlay, never into the shared tree.
    """
    (root / "etc/apt/sources.list").write_text(f"deb {DEBIAN_MIRROR} {suite} {' '.join(COMPONENTS)}\n")
    if suite in VALID_UNTIL_IGNORED:
        (root / "etc/apt/apt.conf.d/80testbed-valid-until").write_text('Acquire::Check-Valid-Until "false";\n')
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/testbed.conf").write_text(
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
    )
    # No getty on a console nobody reads; it only spams the boot log.
    run(["chroot", str(root), "systemctl", "mask", "console-getty.service"], check=False)
    run(["chroot", str(root), "systemctl", "enable", "ssh.service"], check=False)
    run(["chroot", str(root), "apt-get", "clean"], check=False)
