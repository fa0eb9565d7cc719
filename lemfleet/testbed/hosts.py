"""One test-bed host: an overlay root, a network namespace, a veth pair and systemd-nspawn.

Host number ``n`` gets:

- the network namespace ``lftb-tb<n>``, holding ``host0`` at 10.213.<n>.2/24;
- the controller-side veth ``lftb-tb<n>`` at 10.213.<n>.1/24, and a route
  from the host to the apt proxy over it;
- an overlay of the cached root filesystem at ``HOSTS_DIR/tb<n>/root``;
- its own machine id, hostname and SSH host keys, and the test bed's key in
  root's ``authorized_keys``;
- ``systemd-nspawn --boot`` running its own systemd, started in a session of
  its own so that it outlives the command that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lemfleet.testbed.paths import HOSTS_DIR, PREFIX, PROXY_ADDRESS, PROXY_URL, SSH_KEY, run


@dataclass
class HostRecord:
    name: str
    number: int
    suite: str
    address: str
    gateway: str
    netns: str
    veth: str
    root: str
    pid: int = 0
    binds: list[str] = field(default_factory=list)
    firewall: bool = False  # systemd can enforce IPAddressDeny= (see FIREWALL_NSPAWN_ARGS)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def record_for(number: int, suite: str, binds: list[str] | None = None, firewall: bool = False) -> HostRecord:
    name = f"tb{number}"
    return HostRecord(
        name=name,
        number=number,
        suite=suite,
        address=f"10.213.{number}.2",
        gateway=f"10.213.{number}.1",
        netns=f"{PREFIX}-{name}",
        veth=f"{PREFIX}-{name}",
        root=str(HOSTS_DIR / name / "root"),
        binds=list(binds or []),
        firewall=firewall,
    )


# -- filesystem ----------------------------------------------------------------


def mount_overlay(rec: HostRecord, lower: Path) -> None:
    base = Path(rec.root).parent
    for sub in ("upper", "work", "root"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={base / 'upper'},workdir={base / 'work'}",
            rec.root,
        ]
    )


def write_identity(rec: HostRecord) -> None:
    root = Path(rec.root)
    (root / "etc/hostname").write_text(f"lemfleet-{rec.name}\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1 localhost\n{rec.address} lemfleet-{rec.name}\n::1 localhost ip6-localhost\n"
    )
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    run(["ssh-keygen", "-q", "-A", "-f", str(root)])
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(Path(f"{SSH_KEY}.pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # The hosts have no route out; apt reaches the archive through the proxy.
    (root / "etc/apt/apt.conf.d/00testbed-proxy").write_text(f'Acquire::http::Proxy "{PROXY_URL}";\n')


def host_public_key(rec: HostRecord) -> str:
    text = (Path(rec.root) / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
    return " ".join(text.split()[:2])


# -- network -------------------------------------------------------------------


def create_network(rec: HostRecord) -> None:
    run(["ip", "netns", "add", rec.netns])
    run(["ip", "link", "add", rec.veth, "type", "veth", "peer", "name", "host0", "netns", rec.netns])
    run(["ip", "addr", "add", f"{rec.gateway}/24", "dev", rec.veth])
    run(["ip", "link", "set", rec.veth, "up"])
    ns = ["ip", "-n", rec.netns]
    run([*ns, "link", "set", "lo", "up"])
    run([*ns, "addr", "add", f"{rec.address}/24", "dev", "host0"])
    run([*ns, "link", "set", "host0", "up"])
    run([*ns, "route", "add", f"{PROXY_ADDRESS}/32", "via", rec.gateway])


def set_link(rec: HostRecord, up: bool) -> None:
    run(["ip", "link", "set", rec.veth, "up" if up else "down"])


# -- processes -----------------------------------------------------------------


def boot(rec: HostRecord) -> int:
    log_path = Path(rec.root).parent / "console.log"
    cmd = [
        "systemd-nspawn",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{rec.netns}",
        f"--directory={rec.root}",
        f"--machine={PREFIX}-{rec.name}",
        f"--hostname=lemfleet-{rec.name}",
        "--console=passive",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        *[f"--bind-ro={b}" for b in rec.binds],
        *(FIREWALL_NSPAWN_ARGS if rec.firewall else []),
    ]
    proc = subprocess.Popen(
        cmd,
        env=_nspawn_env(rec.suite, rec.firewall),
        stdin=subprocess.DEVNULL,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    rec.pid = proc.pid
    return proc.pid


# systemd >= 258 (Debian sid) refuses to boot on the legacy cgroup hierarchy that nspawn hands a container
# on a cgroup v1 controller; nspawn can give it a unified (cgroup2) hierarchy of its own instead.
UNIFIED_CGROUP_SUITES = frozenset({"sid"})


# systemd enforces IPAddressDeny=/IPAddressAllow= with cgroup BPF programs: only on a unified (cgroup2)
# hierarchy, and only where the bpf() call is allowed, which nspawn's own seccomp filter denies by default.
# A host booted with firewall=True gets both, so a test can show that a unit's IP allow list holds (measured:
# without them systemd starts the unit and silently filters nothing).
FIREWALL_NSPAWN_ARGS = ("--system-call-filter=bpf",)


def _nspawn_env(suite: str, firewall: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    if suite in UNIFIED_CGROUP_SUITES or firewall:
        env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
    return env


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def container_pids(rec: HostRecord) -> list[int]:
    """Every process inside the host: those in the PID namespace of nspawn's child."""
    children = Path(f"/proc/{rec.pid}/task/{rec.pid}/children")
    try:
        init = int(children.read_text().split()[0])
        pidns = os.readlink(f"/proc/{init}/ns/pid")
    except (OSError, IndexError, ValueError):
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns/pid") == pidns:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def signal_host(rec: HostRecord, sig: signal.Signals) -> None:
    for pid in container_pids(rec):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
