"""The non-GPU host facts: OS, CPU, memory, disk, systemd and whether it is a container, in one round trip.

``HostProbe`` runs one shell command that prints marked sections, and its
``process()`` parses them with the small pure parsers below, each of which is
unit-tested on real output.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from pyinfra.api import FactBase

MARK = "@@lemfleet:"


def split_sections(lines: Iterable[str]) -> dict[str, list[str]]:
    """Split probe output at ``@@lemfleet:<name>`` lines into named sections."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith(MARK):
            current = sections.setdefault(line[len(MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return sections


def parse_os_release(lines: Iterable[str]) -> dict[str, str]:
    """``/etc/os-release`` as a dict, quotes removed."""
    result = {}
    for line in lines:
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            parts = shlex.split(value) if value else [""]
            result[key.strip()] = parts[0] if parts else ""
    return result


def parse_lscpu_cores(lines: Iterable[str]) -> tuple[int, int]:
    """(physical cores, logical CPUs) from ``lscpu -p=CORE,SOCKET``.

    Each CPU line is ``core,socket``; SMT siblings share a pair, so the
    physical core count is the number of distinct pairs.
    """
    pairs = [tuple(line.split(",")[:2]) for line in lines if line and not line.startswith("#")]
    return len(set(pairs)), len(pairs)


def parse_cpuinfo(lines: Iterable[str]) -> tuple[str, frozenset[str]]:
    """(model name, flags) from the first CPU in ``/proc/cpuinfo``."""
    model, flags = "unknown", frozenset[str]()
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def parse_meminfo(lines: Iterable[str]) -> dict[str, int]:
    """``/proc/meminfo`` values in bytes (the file gives kB)."""
    result = {}
    for line in lines:
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            result[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return result


def parse_df(lines: Iterable[str]) -> dict[str, int]:
    """``path avail`` lines (see the probe command) into {path: bytes free}."""
    result = {}
    for line in lines:
        path, _, avail = line.rpartition(" ")
        if path and avail.isdigit():
            result[path] = int(avail)
    return result


def probe_command(paths: Iterable[str]) -> str:
    """The one shell command behind :class:`HostProbe`.

    For disk space, each target path is walked up to its nearest existing
    parent, because the directories lemfleet will create don't exist yet on a
    fresh host, and the space that matters is that of their filesystem.
    """
    disk = " ".join(shlex.quote(p) for p in paths)
    return "; ".join(
        [
            f"echo {MARK}hostname; hostname",
            f"echo {MARK}os; cat /etc/os-release",
            f"echo {MARK}arch; uname -m",
            f"echo {MARK}lscpu; lscpu -p=CORE,SOCKET 2>/dev/null",
            f"echo {MARK}cpuinfo; grep -m2 -E '^(model name|flags)' /proc/cpuinfo",
            f"echo {MARK}meminfo; grep -E '^MemTotal:' /proc/meminfo",
            f"echo {MARK}disk; for p in {disk}; do d=$p; "
            'while [ ! -e "$d" ]; do d=$(dirname "$d"); done; '
            'echo "$p $(df -PB1 "$d" | awk \'NR==2 {print $4}\')"; done',
            f"echo {MARK}systemd; [ -d /run/systemd/system ] && systemctl is-system-running 2>/dev/null"
            " || echo offline",
            f"echo {MARK}container; systemd-detect-virt --container 2>/dev/null || echo none",
            "true",
        ]
    )


class HostProbe(FactBase):
    """OS, CPU, memory, free disk on the given paths, systemd state and whether it is a container.

    Sample output (sections shortened)::

        @@lemfleet:os
        PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
        ID=debian
        @@lemfleet:lscpu
        0,0
        1,0
        @@lemfleet:systemd
        running
        @@lemfleet:container
        systemd-nspawn
    """

    def command(self, paths: tuple[str, ...] = ("/opt", "/var/lib")) -> str:
        return probe_command(paths)

    def process(self, output: Iterable[str]) -> dict[str, list[str]]:
        return split_sections(output)
