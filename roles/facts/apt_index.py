"""What a host's own apt indexes offer of the distro source's packages: ``apt-cache policy`` and ``apt-cache show``.

The controller knows Debian's releases from a table (roles/distro_builds.py);
for any other release, Ubuntu's among them, it cannot assume what the
archive ships, and it cannot read Ubuntu's indexes itself. So the host is
asked: its indexes, as ``apt-get update`` last left them (the fact changes
nothing, so it never updates them). ``policy`` gives the installed and
candidate versions and where the candidate comes from; ``show`` the
candidate's sizes and, for a HIP backend, the gfx targets its index entry
lists (``X-Rocm-Gpu-Architecture``, which Debian's libggml0-backend-hip
carries).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from shlex import quote

from pyinfra.api import FactBase

from lemfleet.roles.distro_builds import SERVER_PACKAGE, known_packages
from lemfleet.roles.facts.host import MARK, split_sections

# The packages asked about: those the distro source installs, and ``llama.cpp``, which lemfleet does not install: one
# package holding everything before 5882+dfsg-3 (what an older release may still ship), a metapackage since.
OLD_PACKAGE = "llama.cpp"
INDEX_PACKAGES = (*known_packages(), OLD_PACKAGE)
GPU_FIELD = "X-Rocm-Gpu-Architecture"

_VERSION_LINE = re.compile(r"^\s+(\*\*\*\s+)?(\S+)\s+(-?\d+)$")
_ORIGIN_LINE = re.compile(r"^\s+(-?\d+)\s+(\S+)(?:\s+(.*?))?\s*$")


@dataclass(frozen=True)
class IndexEntry:
    """One package as the host's indexes know it."""

    package: str
    installed: str | None = None
    candidate: str | None = None
    origin: str = ""  # where the candidate comes from: "deb.debian.org/debian sid/main amd64" or the like
    suite: str = ""  # the origin's suite: "sid", "noble-updates"
    download_bytes: int = 0  # Size of the candidate's .deb (apt-cache show)
    installed_kib: int = 0  # Installed-Size
    gpu_targets: tuple[str, ...] = ()  # X-Rocm-Gpu-Architecture


@dataclass(frozen=True)
class AptIndex:
    """What the host's indexes hold of :data:`INDEX_PACKAGES`; ``lists`` 0: the host has no package index at all."""

    entries: dict[str, IndexEntry]
    lists: int

    def candidate(self, package: str) -> IndexEntry | None:
        entry = self.entries.get(package)
        return entry if entry and (entry.candidate or entry.installed) else None

    def found(self) -> list[str]:
        """``name version`` of every package found, for the plan's reason."""
        return [
            f"{e.package} {e.installed or e.candidate}" for e in self.entries.values() if e.candidate or e.installed
        ]


def index_command() -> str:
    names = " ".join(quote(p) for p in INDEX_PACKAGES)
    return "; ".join(
        [
            f"echo {MARK}policy; LC_ALL=C apt-cache policy {names} 2>&1",
            f"echo {MARK}show; LC_ALL=C apt-cache show --no-all-versions {names} 2>&1",
            f"echo {MARK}lists; ls /var/lib/apt/lists/ 2>/dev/null | grep -c '_Packages' ",
            "true",
        ]
    )


def parse_policy(lines: Iterable[str]) -> dict[str, dict[str, str]]:
    """``apt-cache policy`` as ``{package: {installed, candidate, origin}}`` (``(none)`` left out)."""
    result: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    in_candidate = False
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip() or re.match(r"^[NWE]: ", line):
            continue
        if not line.startswith(" ") and line.endswith(":"):
            current = result.setdefault(line[:-1], {})
            in_candidate = False
            continue
        if current is None:
            continue
        key, sep, value = line.strip().partition(": ")
        if sep and key in ("Installed", "Candidate"):
            if value != "(none)":
                current[key.lower()] = value
            continue
        version = _VERSION_LINE.match(line)
        if version:
            in_candidate = version.group(2) == current.get("candidate")
            continue
        origin = _ORIGIN_LINE.match(line)
        if origin and in_candidate and "origin" not in current and origin.group(2) != "/var/lib/dpkg/status":
            where = re.sub(r"^[a-z+]+:/*", "", origin.group(2))
            current["origin"] = " ".join(
                p for p in (where, (origin.group(3) or "").removesuffix("Packages").strip()) if p
            )
    return result


def parse_show(lines: Iterable[str]) -> dict[str, dict[str, str]]:
    """``apt-cache show`` stanzas as ``{package: {field: value}}`` (the first stanza of each package)."""
    stanzas: dict[str, dict[str, str]] = {}
    fields: dict[str, str] = {}
    key = ""

    def close() -> None:
        if "Package" in fields:
            stanzas.setdefault(fields["Package"], dict(fields))
        fields.clear()

    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            close()
        elif re.match(r"^[NWE]: ", line):
            continue
        elif line.startswith((" ", "\t")):
            if key:
                fields[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    close()
    return stanzas


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def parse_index(lines: Iterable[str]) -> AptIndex:
    """The fact's output (policy, show and the count of Packages lists) as an :class:`AptIndex`."""
    sections = split_sections(lines)
    policy = parse_policy(sections.get("policy", []))
    show = parse_show(sections.get("show", []))
    entries = {}
    for name in INDEX_PACKAGES:
        known, fields = policy.get(name, {}), show.get(name, {})
        if not known and not fields:
            continue
        candidate = known.get("candidate")
        same = fields.get("Version") == candidate  # show's stanza is the candidate's
        origin = known.get("origin", "")
        suite = origin.split(" ")[1].split("/")[0] if len(origin.split(" ")) > 1 else ""
        entries[name] = IndexEntry(
            package=name,
            installed=known.get("installed"),
            candidate=candidate,
            origin=origin,
            suite=suite,
            download_bytes=_int(fields.get("Size")) if same else 0,
            installed_kib=_int(fields.get("Installed-Size")) if same else 0,
            gpu_targets=tuple(fields.get(GPU_FIELD, "").split()) if same else (),
        )
    lists = "".join(sections.get("lists", [])).strip()
    return AptIndex(entries, int(lists) if lists.isdigit() else 0)


class AptIndexFact(FactBase[AptIndex]):
    """The distro source's packages in the host's own indexes (recorded sample: tests/unit/fixtures/apt-index/)."""

    def command(self) -> str:
        return index_command()

    def process(self, output: Iterable[str]) -> AptIndex:
        return parse_index(output)


assert SERVER_PACKAGE in INDEX_PACKAGES
