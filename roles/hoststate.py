"""Every path lemfleet manages on a host, observed in one round trip.

pyinfra's own file operations each fetch a fact or two, one SSH round trip
apiece. A rerun that changes nothing is mostly such round trips, so
lemfleet's operations (``roles/ops.py``) read one fact instead:
:class:`ManagedPaths`, which reports the type, mode, owner, size, link target
and (for small files) sha256 of every path the deploy will manage.

Large files (models, source tarballs) are not hashed on every run. When
lemfleet places one after checking its sha256, it writes a sidecar
``<file>.verified`` holding that sha256 with the file's size and mtime; a
later run trusts the file only while all three still match.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase

HASH_LIMIT = 1 << 20  # files up to 1 MiB are hashed every run
SIDECAR = ".verified"


@dataclass(frozen=True)
class PathState:
    kind: str  # "file", "dir", "link" or "missing"
    mode: str = ""  # octal, as stat prints it: "644"
    user: str = ""
    group: str = ""
    size: int = 0
    mtime: int = 0
    sha256: str | None = None  # small files only
    target: str | None = None  # links only
    verified: str | None = None  # the sidecar's "sha256 size mtime", for large files

    @property
    def exists(self) -> bool:
        return self.kind != "missing"

    def verified_sha256(self) -> str | None:
        """The sha256 recorded when lemfleet placed this file, if the file is still as it was then."""
        if self.kind != "file" or not self.verified:
            return None
        parts = self.verified.split()
        if len(parts) == 3 and parts[1] == str(self.size) and parts[2] == str(self.mtime):
            return parts[0]
        return None


MISSING = PathState("missing")


def probe_command(paths: Iterable[str]) -> str:
    quoted = " ".join(shlex.quote(p) for p in paths)
    return (
        f"for p in {quoted}; do "
        'if [ -L "$p" ]; then printf "link\\t%s\\t%s\\n" "$p" "$(readlink "$p")"; '
        'elif [ -d "$p" ]; then stat -c "dir\t%n\t%a\t%U\t%G\t%s\t%Y" "$p"; '
        'elif [ -f "$p" ]; then s=$(stat -c "%a\t%U\t%G\t%s\t%Y" "$p"); '
        f'h=-; [ "$(stat -c %s "$p")" -le {HASH_LIMIT} ] && h=$(sha256sum "$p" | cut -d" " -f1); '
        f'v=-; [ -f "$p{SIDECAR}" ] && v=$(head -c 200 "$p{SIDECAR}" | tr "\\t\\n" "  "); '
        'printf "file\\t%s\\t%s\\t%s\\t%s\\n" "$p" "$s" "$h" "$v"; '
        'else printf "missing\\t%s\\n" "$p"; fi; done'
    )


def parse(lines: Iterable[str]) -> dict[str, PathState]:
    states: dict[str, PathState] = {}
    for line in lines:
        fields = line.rstrip("\n").split("\t")
        kind, path = fields[0], fields[1] if len(fields) > 1 else ""
        if kind == "link" and len(fields) >= 3:
            states[path] = PathState("link", target=fields[2])
        elif kind == "dir" and len(fields) >= 7:
            states[path] = PathState("dir", fields[2], fields[3], fields[4], int(fields[5]), int(fields[6]))
        elif kind == "file" and len(fields) >= 9:
            sha = fields[7] if fields[7] != "-" else None
            verified = fields[8].strip() if fields[8].strip() not in ("", "-") else None
            states[path] = PathState("file", fields[2], fields[3], fields[4], int(fields[5]), int(fields[6]),
                                     sha256=sha, verified=verified)  # fmt: skip
        elif kind == "missing":
            states[path] = MISSING
    return states


class ManagedPaths(FactBase):
    """State of each given path. Sample output::

    dir	/etc/lemfleet	755	root	root	4096	1764420000
    file	/etc/lemfleet/lemfleet-llama.env	644	root	root	312	1764420000	3f2a...	-
    link	/opt/lemfleet/llama.cpp/current	/opt/lemfleet/llama.cpp/d80e35c3e59e42ca
    missing	/etc/lemfleet/api-key
    """

    def command(self, paths: tuple[str, ...]) -> str:
        return probe_command(paths)

    def process(self, output: Iterable[str]) -> dict[str, PathState]:
        return parse(output)


# The paths this deploy manages on each host, declared once by deploy.py, and
# their state as observed once per run: every operation decides from the same
# snapshot of the host, taken before anything changed (as pyinfra's own
# operations decide from facts gathered before execution).
_declared: dict[str, tuple[str, ...]] = {}
_observed: dict[str, dict[str, PathState]] = {}


def declare(paths: Iterable[str]) -> None:
    _declared[host.name] = tuple(sorted(set(paths)))
    _observed.pop(host.name, None)


def path_state(path: str) -> PathState:
    paths = _declared.get(host.name, ())
    if path not in paths:
        raise KeyError(f"{path} was not declared with lemfleet.roles.hoststate.declare() for {host.name}")
    if host.name not in _observed:
        _observed[host.name] = host.get_fact(ManagedPaths, paths=paths)
    return _observed[host.name].get(path, MISSING)
