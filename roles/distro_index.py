"""The distro source on a release lemfleet's table does not know (Ubuntu, a later Debian): decided on the host.

roles/distro_builds.py holds what Debian's releases ship, read from
Debian's indexes; the controller cannot read Ubuntu's, and should not guess.
On a host whose release is not in that table, :func:`index_offer` decides
from the host's own package indexes (roles/facts/apt_index.py): the
server, ggml and backend packages must all be there, and, for HIP, the
backend's index entry must list every planned gfx target. The plan says
"decided on the host from its package indexes" and what it found. The
version is the installed one where the package is installed (so a later
``apt-get update`` does not change what a rerun deploys), else the
candidate; ``llama_cpp_distro_versions`` names another, as on Debian.
After the install, the host checks the versions and, for HIP, the offload
targets in the library itself, as for a release in the table.
"""

from __future__ import annotations

from lemfleet.roles.distro_builds import (
    BACKEND_PACKAGES,
    GGML_PACKAGE,
    SERVER_LIBRARY,
    SERVER_PACKAGE,
    DistroOffer,
    Package,
    distro_offer,
)
from lemfleet.roles.facts.apt_index import GPU_FIELD, OLD_PACKAGE, AptIndex, AptIndexFact, IndexEntry
from lemfleet.roles.hostinfo import HostFacts

DECIDED = "decided on the host from its package indexes"
FACTS_FROM = "the host's package indexes (apt-cache policy and show)"
# Where roles/distro_install.py looks for ggml's backends: Debian's x86-64 multiarch path.
ARCHES = ("x86_64",)


def _package(entry: IndexEntry) -> Package:
    version = entry.installed or entry.candidate or ""
    same = version == entry.candidate
    return Package(entry.package, version, entry.download_bytes if same else 0, entry.installed_kib if same else 0,
                   FACTS_FROM)  # fmt: skip


def index_offer(index: AptIndex, release: str, arch: str, backend: str, gpu_targets: tuple[str, ...]) -> DistroOffer:
    """What the distribution's build would give this plan, from the host's own indexes (pure)."""
    found = ", ".join(index.found()) or "none of " + ", ".join((SERVER_PACKAGE, GGML_PACKAGE))

    def refuse(why: str, covered: tuple[str, ...] = (), missing: tuple[str, ...] = ()) -> DistroOffer:
        text = f"{DECIDED}: {why} (found: {found})"
        return DistroOffer(True, False, release, "", backend, (), covered, missing, text, FACTS_FROM)

    if index.lists == 0:
        return refuse(f"{release} has no package index on the host (apt-get update has not run there)")
    if arch not in ARCHES:
        return refuse(f"lemfleet installs the distribution's build on {', '.join(ARCHES)} only, not {arch}")
    server = [index.candidate(SERVER_PACKAGE), index.candidate(SERVER_LIBRARY)]
    if None in server:
        old = index.candidate(OLD_PACKAGE)
        also = f"; it has {OLD_PACKAGE} {old.candidate}, which lemfleet does not install" if old else ""
        return refuse(f"{release} has no {SERVER_PACKAGE} and {SERVER_LIBRARY} (llama-server){also}")
    ggml = index.candidate(GGML_PACKAGE)
    if ggml is None:
        return refuse(f"{release} has no {GGML_PACKAGE}")
    chosen: IndexEntry | None = None
    if backend != "cpu":
        name = BACKEND_PACKAGES.get(backend)
        chosen = index.candidate(name) if name else None
        if chosen is None:
            return refuse(f"{release} has no ggml {backend} backend package ({name or 'none is known'})")
    covered: tuple[str, ...] = tuple(gpu_targets)
    missing: tuple[str, ...] = ()
    if backend == "hip":
        assert chosen is not None
        if not chosen.gpu_targets:
            return refuse(f"{chosen.package}'s index entry lists no gfx targets ({GPU_FIELD}), so its coverage "
                          "cannot be checked before the install")  # fmt: skip
        covered = tuple(t for t in gpu_targets if t in chosen.gpu_targets)
        missing = tuple(t for t in gpu_targets if t not in chosen.gpu_targets)
        if missing:
            return refuse(
                f"{chosen.package} has no offload code for {', '.join(missing)}; "
                f"it covers {', '.join(chosen.gpu_targets)}",
                covered,
                missing,
            )
    entries = [e for e in (*server, ggml, chosen) if e is not None]
    packages = tuple(_package(e) for e in entries)
    suite = next((e.suite for e in entries if e.suite), "the host's apt sources")
    tools = packages[0]
    targets = f", covering {', '.join(covered)}" if covered else ""
    why = (
        f"{DECIDED}: {release} ({suite}) has {tools.name} {tools.version} with {GGML_PACKAGE} "
        f"{_package(ggml).version} and its {backend} backend{targets}"
    )
    return DistroOffer(True, True, release, suite, backend, packages, covered, (), why, FACTS_FROM)


def host_index(facts: HostFacts) -> AptIndex | None:
    """The host's own indexes where the table does not know its release (one command over the connection);
    None where it does, so that hosts of a release in the table are asked nothing more."""
    if distro_offer(facts.os_id, facts.os_version, facts.os_codename, facts.arch, "cpu", ()).known:
        return None
    from pyinfra import host

    return host.get_fact(AptIndexFact)
