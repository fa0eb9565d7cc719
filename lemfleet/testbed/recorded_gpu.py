"""Test-bed hosts that present a recorded GPU: its tools on PATH and its KFD topology in /sys/class.

The hosts have no GPU. What a GPU host's detection reads is put in place instead, from real recorded outputs
(``tests/fixtures/gpu``), so that an unmodified ``pyinfra … deploy.py`` detects, plans and deploys for that GPU:

- ``/usr/local/bin/<tool>`` for each recorded tool (``rocminfo``, ``nvidia-smi``, ``lspci``, ``vulkaninfo``,
  ``amd-smi``, ``rocm-smi``), a shell script that prints the recording, exactly as stored less its ``# source:``
  header, with the recorded exit status. ``nvidia-smi`` answers the invocations the facts make, each from its own
  recording: ``--query-gpu=…`` (a CSV recording), ``-L`` (a listing) and the bare table; an invocation with no
  recording says so on stderr and exits 2, as the facts then fall back to the table the way they do for an
  nvidia-smi older than 510. A failure recording (non-zero status) answers every invocation, as a broken driver
  does. The other tools are called once by the facts and print their recording whatever the arguments.
  ``/usr/local/bin`` comes before ``/usr/bin`` on PATH, so packages the drivers step installs later (Debian's
  ``rocminfo``, ``vulkan-tools``) do not replace them.
- ``/sys/class/kfd/kfd/topology`` for AMD GPUs: the facts read real sysfs, so the host's
  ``/sys/class`` is a read-only bind mount of a mirror of the controller's (every class entry keeps its relative
  link into the host's own ``/sys/devices``) plus a ``kfd`` tree in the layout of the amdgpu driver's
  ``kfd_topology.c``. No KFD dump of verifiable origin was recorded, so its values are *derived* from the
  recorded tools' GPUs as lemfleet's own parser reads them (gfx target, PCI id and slot, VRAM; render minors
  128, 129, … in order); ``simd_count`` is 1, only "not a CPU node".

Device nodes are not made: systemd-nspawn gives each host its own ``/dev``, a stand-in node would be another
device (``/dev/null``'s 1:3) that a GPU runtime opens and fails on in ways no GPU host shows, and systemd skips a
``DeviceAllow=`` path that does not exist (it logs it) and starts the unit all the same. So the unit is rendered
with the GPU's nodes, the server starts, finds no GPU, and the deploy's offload check must fail the host.

Use::

    rec = add_gpu_host({"nvidia-smi": "nvidia-smi/tesla-t4-driver580-gpu-table-partial.txt"})
    rec = add_gpu_host({"rocminfo": "rocminfo/rx7900xtx-gfx1100.txt"}, suite="trixie")
    rec = add_gpu_host(SECTIONS, rc={"nvidia-smi": 9})  # a broken driver, as tests/fixtures/gpu/hosts.py does

Relative paths are read from the checkout's ``tests/fixtures/gpu``; the section names are those of
``GpuProbe`` and of ``tests/fixtures/gpu/hosts.py``'s ``SCENARIOS``. Remove the host with
``lemfleet.testbed.remove(rec.name)``: the mirror lives in the host's own directory.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from lemfleet.roles.facts.gpu import MARK, RC_MARK, parse_probe
from lemfleet.roles.facts.gpu_pci import GpuReport
from lemfleet.roles.hostinfo import Gpu
from lemfleet.testbed import rootfs
from lemfleet.testbed.bed import add
from lemfleet.testbed.hosts import HostRecord
from lemfleet.testbed.paths import HOSTS_DIR
from lemfleet.testbed.registry import load
from lemfleet.testbed.teardown import remove

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "gpu"
PREFIX = "/usr/local"
DATA = "share/lemfleet-testbed-gpu"
TOOLS = ("rocminfo", "amd-smi", "rocm-smi", "nvidia-smi", "vulkaninfo", "lspci")
NVIDIA_KINDS = ("nvidia-smi-query", "nvidia-smi-list", "nvidia-smi")
ACCEPTED = (*TOOLS, "nvidia-smi-query", "nvidia-smi-list")

Recording = str | Path | Sequence[str]
_LISTING = re.compile(r"^GPU \d+: ")


def read(recording: Recording) -> list[str]:
    """A recording's lines without its ``# source:`` / ``# hardware:`` header (given lines are kept as they are)."""
    if not isinstance(recording, str | Path):
        return list(recording)
    path = Path(recording)
    lines = (path if path.is_absolute() else FIXTURES / path).read_text().splitlines()
    while lines and lines[0].startswith(("# source:", "# hardware:")):
        lines.pop(0)
    if lines and not lines[0].strip():
        lines.pop(0)
    return lines


def _nvidia_kind(lines: list[str]) -> str:
    """Which invocation a recording under "nvidia-smi" answers: a listing, a query CSV or the table."""
    first = next((line for line in lines if line.strip()), "")
    if _LISTING.match(first):
        return "nvidia-smi-list"
    if first.count(",") >= 2 and "|" not in first:
        return "nvidia-smi-query"
    return "nvidia-smi"


def outputs(
    recordings: Mapping[str, Recording], rc: Mapping[str, int] | None = None
) -> dict[str, tuple[list[str], int]]:
    """``{invocation: (lines, exit status)}``; raises ValueError naming a key it cannot present."""
    found: dict[str, tuple[list[str], int]] = {}
    for key, recording in recordings.items():
        lines = read(recording)
        if key == "device-nodes" and not lines:
            continue  # the CPU-only scenario's empty section: nothing to present
        if key not in ACCEPTED:
            raise ValueError(
                f"recorded section {key!r} cannot be presented by a test-bed host; accepted: {', '.join(ACCEPTED)}"
            )
        kind = _nvidia_kind(lines) if key == "nvidia-smi" else key
        if kind in found:
            raise ValueError(f"two recordings answer {kind!r}: give one per invocation")
        found[kind] = (lines, (rc or {}).get(key, 0))
    return found


def expected_report(recordings: Mapping[str, Recording], rc: Mapping[str, int] | None = None) -> GpuReport:
    """What lemfleet's parser makes of the recordings alone: the GPUs the host should be detected with."""
    found = outputs(recordings, rc)
    lines: list[str] = []
    for kind, (body, status) in found.items():
        if not kind.startswith("nvidia-smi"):
            lines += [MARK + kind, *body, "", f"{RC_MARK}{kind}:{status}"]
    nvidia = [found[kind] for kind in NVIDIA_KINDS if kind in found]
    if nvidia:  # one section, as the probe's three nvidia-smi sections are joined before parsing
        body = [line for part, _ in nvidia for line in part]
        lines += [MARK + "nvidia-smi", *body, "", f"{RC_MARK}nvidia-smi:{max(s for _, s in nvidia)}"]
    return parse_probe(lines)


def _script(tool: str, found: Mapping[str, tuple[list[str], int]], data: str) -> str:
    def answer(kind: str) -> str:
        return f"cat {shlex.quote(f'{data}/{kind}.out')}; exit {found[kind][1]}"

    missing = (
        f'echo "lemfleet test bed: {tool} has no recorded output for these arguments ($(echo "$*" | tr , \' \'))" '
        ">&2; exit 2"
    )
    lines = ["#!/bin/sh", f"# lemfleet test bed: {tool} of a recorded GPU host (lemfleet/testbed/recorded_gpu.py)."]
    if tool != "nvidia-smi":
        lines.append(answer(tool))
    else:
        failing = [k for k in NVIDIA_KINDS if k in found and found[k][1] != 0]
        if failing:
            lines.append(answer(failing[0]))
        else:
            cases = {"nvidia-smi-query": "--query-gpu=*", "nvidia-smi-list": "-L|--list-gpus", "nvidia-smi": '""'}
            lines.append('case "$*" in')
            lines += [f"    {cases[k]}) {answer(k)} ;;" for k in NVIDIA_KINDS if k in found]
            lines += [f"    *) {missing} ;;", "esac"]
    return "\n".join(lines) + "\n"


def install_tools(
    root: Path, recordings: Mapping[str, Recording], rc: Mapping[str, int] | None = None, prefix: str = PREFIX
) -> list[str]:
    """Write the tool scripts and their recordings under ``root``/``prefix``; the tools' names.

    ``prefix`` is the path the host sees (``/usr/local``); ``root`` is where its filesystem is on this
    machine (a test-bed host's overlay root, or ``/`` with a scratch prefix to run the tools here).
    """
    found = outputs(recordings, rc)
    base = root / prefix.lstrip("/")
    data = base / DATA
    (base / "bin").mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    for kind, (body, _) in found.items():
        (data / f"{kind}.out").write_text("".join(f"{line}\n" for line in body))
    tools = sorted({"nvidia-smi" if kind.startswith("nvidia-smi") else kind for kind in found})
    for tool in tools:
        script = base / "bin" / tool
        script.write_text(_script(tool, found, f"{prefix}/{DATA}"))
        script.chmod(0o755)
    return tools


def _gfx_target_version(gfx: str | None) -> int:
    """gfx1100 -> 110000, gfx90a -> 90010, gfx942 -> 90402 (the inverse of gfx_from_target_version)."""
    match = re.fullmatch(r"gfx(\d+)([0-9a-f])([0-9a-f])", gfx or "")
    if not match:
        return 0
    return int(match[1]) * 10000 + int(match[2], 16) * 100 + int(match[3], 16)


def _location(slot: str | None) -> tuple[int, int]:
    """(domain, location_id) of "0000:03:00.0": location_id is (bus << 8) | (dev << 3) | fn."""
    match = re.fullmatch(r"([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])", (slot or "").lower())
    if not match:
        return 0, 0
    return int(match[1], 16), (int(match[2], 16) << 8) | (int(match[3], 16) << 3) | int(match[4])


def write_kfd(dest: Path, gpus: Sequence[Gpu]) -> Path:
    """A ``/sys/class`` mirror at ``dest`` with a KFD topology of ``gpus``: node 0 the CPU, then one per GPU."""
    for entry in Path("/sys/class").iterdir():
        mirror = dest / entry.name
        mirror.mkdir(parents=True, exist_ok=True)
        for link in entry.iterdir():
            if link.is_symlink():
                (mirror / link.name).symlink_to(os.readlink(link))
    nodes: list[tuple[dict[str, int], dict[str, int]]] = [
        ({"cpu_cores_count": os.cpu_count() or 1, "simd_count": 0, "gfx_target_version": 0},
         {"heap_type": 0, "size_in_bytes": 0}),
    ]  # fmt: skip
    for number, gpu in enumerate(gpus):
        domain, location = _location(gpu.pci_slot)
        device = int(gpu.pci_id.split(":")[1], 16) if gpu.pci_id else 0
        props = {"cpu_cores_count": 0, "simd_count": 1, "gfx_target_version": _gfx_target_version(gpu.gfx_target),
                 "vendor_id": 0x1002, "device_id": device, "location_id": location, "domain": domain,
                 "drm_render_minor": 128 + number}  # fmt: skip
        nodes.append((props, {"heap_type": 1, "size_in_bytes": gpu.vram_bytes or 0, "flags": 0}))
    for node, (props, bank) in enumerate(nodes):
        base = dest / "kfd" / "kfd" / "topology" / "nodes" / str(node)
        (base / "mem_banks" / "0").mkdir(parents=True)
        (base / "name").write_text("\n" if node == 0 else "ip discovery\n")
        (base / "properties").write_text("".join(f"{k} {v}\n" for k, v in props.items()))
        (base / "mem_banks" / "0" / "properties").write_text("".join(f"{k} {v}\n" for k, v in bank.items()))
    return dest


def _next_number() -> int:
    """The number ``add`` gives the next host (the lowest one free), so the mirror can live in its directory."""
    taken = {r.number for r in load()}
    return next(n for n in range(1, len(taken) + 2) if n not in taken)


def add_gpu_host(
    recordings: Mapping[str, Recording],
    rc: Mapping[str, int] | None = None,
    suite: str = rootfs.DEFAULT_SUITE,
) -> HostRecord:
    """Boot one more host that presents the recorded GPU(s); see the module docstring for what is presented.

    Call it under the test bed's lock (scripts/test.sh and the test-bed fixtures take it), as for ``add``.
    """
    gpus, _ = expected_report(recordings, rc)
    amd = [g for g in gpus if g.vendor == "amd"]
    binds: list[str] = []
    number = _next_number()
    if amd:
        mirror = write_kfd(HOSTS_DIR / f"tb{number}" / "sys-class", amd)
        binds.append(f"{mirror}:/sys/class")
    (rec,) = add(1, suite=suite, binds=binds)
    try:
        if rec.number != number:
            raise RuntimeError(f"expected the new host to be tb{number}, got {rec.name}: was another added meanwhile?")
        install_tools(Path(rec.root), recordings, rc)
    except BaseException:
        remove(rec.name)
        raise
    return rec
