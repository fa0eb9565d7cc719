"""What each distribution's own llama.cpp build covers, and whether it covers one host's plan (pure).

The table is what lemfleet knows without asking the host; the host checks
again after installing (roles/distro_install.py), by reading the offload
targets of the backend library it installed. A release that is not in the
table is "not known, check on host": the controller does not guess what
Ubuntu or a later Debian ships.

Every fact carries where it comes from. ``ISSUE_17`` is issue 17 ("llama.cpp
from the distribution"), whose facts were read from Debian's package indexes
through the test bed's apt proxy on 2026-11-30; the package sizes, and the
``X-Rocm-Gpu-Architecture`` field that repeats the HIP targets, were read from
the same indexes (``dists/<suite>/main/binary-amd64/Packages.xz``) that day
while this table was written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from lemfleet.roles.platforms import os_release

ISSUE_17 = "issue 17, read from Debian's package indexes (2026-11-30)"
INDEX = "Debian's Packages index for amd64, read 2026-11-30"

# The package that ships /usr/bin/llama-server, and the library it links (same source package, same version).
SERVER_PACKAGE = "llama.cpp-tools"
SERVER_LIBRARY = "libllama0"
GGML_PACKAGE = "libggml0"  # ggml's core and its CPU backends (one per x86-64 level, chosen at run time)
BACKEND_PACKAGES = {"hip": "libggml0-backend-hip", "vulkan": "libggml0-backend-vulkan"}
# Where Debian's ggml loads its backends from (libggml0's and the backends' file lists).
BACKENDS_DIR = "/usr/lib/x86_64-linux-gnu/ggml/backends0"
BACKEND_LIBRARIES = {"hip": f"{BACKENDS_DIR}/libggml-hip.so", "vulkan": f"{BACKENDS_DIR}/libggml-vulkan.so"}


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    download_bytes: int  # the .deb (Packages: Size)
    installed_kib: int  # Packages: Installed-Size
    source: str  # where these figures come from


@dataclass(frozen=True)
class Backend:
    """One ggml backend a release ships: its package (None: in libggml0 itself) and what it covers."""

    name: str  # "cpu", "vulkan", "hip"
    package: Package | None
    gpu_targets: tuple[str, ...] = ()  # hip only: the gfx targets its offload bundles hold
    runtime: str = ""  # what it runs on, e.g. "HIP >= 6.1.5 (libamdhip64-6)"
    source: str = ISSUE_17


@dataclass(frozen=True)
class DistroBuild:
    """What one release's archive holds; ``server`` None: no llama-server package there."""

    release: tuple[str, str]  # the key of roles/platforms.os_release: ("debian", "sid")
    suite: str  # the apt suite the packages come from
    arches: tuple[str, ...]
    server: tuple[Package, ...]  # llama.cpp-tools and libllama0
    ggml: Package | None
    backends: dict[str, Backend]
    source: str = ISSUE_17


_SID_LLAMA = "1:0.7.0+dfsg-2"
_SID_GGML = "0.27.0-1"
_BPO_GGML = "0.27.0-1~bpo13+1"
# issue 17: "The HIP backend's offload bundles name gfx803, gfx900, gfx906, gfx908, gfx90a, gfx1010, gfx1030,
# gfx1100, gfx1101 and gfx1102" (read from the .so in the .deb); the index's X-Rocm-Gpu-Architecture agrees.
_DEBIAN_HIP_TARGETS = (
    "gfx803", "gfx900", "gfx906", "gfx908", "gfx90a", "gfx1010", "gfx1030", "gfx1100", "gfx1101", "gfx1102",
)  # fmt: skip

TABLE: dict[tuple[str, str], DistroBuild] = {
    ("debian", "sid"): DistroBuild(
        release=("debian", "sid"),
        suite="sid",
        arches=("x86_64",),  # only amd64's index was read
        server=(
            Package(SERVER_PACKAGE, _SID_LLAMA, 1642656, 6711, f"{ISSUE_17}; sizes: {INDEX}"),
            Package(SERVER_LIBRARY, _SID_LLAMA, 3259120, 12136, INDEX),
        ),
        ggml=Package(GGML_PACKAGE, _SID_GGML, 1671168, 15571, f"{ISSUE_17}; sizes: {INDEX}"),
        backends={
            "cpu": Backend("cpu", None, runtime="ggml's CPU backends, in libggml0", source=INDEX),
            "vulkan": Backend(
                "vulkan",
                Package(BACKEND_PACKAGES["vulkan"], _SID_GGML, 4293624, 40980, f"{ISSUE_17}; sizes: {INDEX}"),
                runtime="libvulkan1 and the GPU's Vulkan driver",
            ),
            "hip": Backend(
                "hip",
                Package(BACKEND_PACKAGES["hip"], _SID_GGML, 114978860, 1240790, f"{ISSUE_17}; sizes: {INDEX}"),
                gpu_targets=_DEBIAN_HIP_TARGETS,
                runtime="HIP >= 6.1.5 (libamdhip64-6), libhipblas2, librocblas4",
            ),
        },
    ),
    # issue 17: "trixie-backports: libggml0 0.27.0-1~bpo13+1, with libggml0-backend-hip built against Debian 13's
    # HIP 5.7.1, and -vulkan. No llama.cpp package."
    ("debian", "13"): DistroBuild(
        release=("debian", "13"),
        suite="trixie-backports",
        arches=("x86_64",),
        server=(),
        ggml=Package(GGML_PACKAGE, _BPO_GGML, 1583784, 15280, f"{ISSUE_17}; sizes: {INDEX}"),
        backends={
            "cpu": Backend("cpu", None, runtime="ggml's CPU backends, in libggml0", source=INDEX),
            "vulkan": Backend(
                "vulkan",
                Package(BACKEND_PACKAGES["vulkan"], _BPO_GGML, 4145884, 39261, f"{ISSUE_17}; sizes: {INDEX}"),
            ),
            "hip": Backend(
                "hip",
                Package(BACKEND_PACKAGES["hip"], _BPO_GGML, 115933140, 1574551, f"{ISSUE_17}; sizes: {INDEX}"),
                gpu_targets=_DEBIAN_HIP_TARGETS,
                runtime="HIP 5.7.1 (libamdhip64-5), Debian 13's",
            ),
        },
    ),
    # issue 17: "bookworm-backports: nothing."
    ("debian", "12"): DistroBuild(("debian", "12"), "bookworm-backports", ("x86_64",), (), None, {}),
}


@dataclass(frozen=True)
class DistroOffer:
    """What the distribution's build would give one host's plan."""

    known: bool  # False: the release is not in the table ("not known, check on host")
    available: bool  # it serves this plan: llama-server, ggml and the backend, covering every planned target
    release: str  # "debian sid"
    suite: str
    backend: str
    packages: tuple[Package, ...]  # what would be installed, when available
    targets_covered: tuple[str, ...]  # the planned GPU targets the backend covers
    targets_missing: tuple[str, ...]
    reason: str
    source: str  # where the table's facts come from

    @property
    def versions(self) -> dict[str, str]:
        return {p.name: p.version for p in self.packages}

    @property
    def download_bytes(self) -> int:
        return sum(p.download_bytes for p in self.packages)

    @property
    def installed_bytes(self) -> int:
        return sum(p.installed_kib for p in self.packages) * 1024


def distro_offer(
    os_id: str, os_version: str, codename: str, arch: str, backend: str, gpu_targets: tuple[str, ...]
) -> DistroOffer:
    """Whether the distribution's build serves ``backend`` with ``gpu_targets`` on this release (pure)."""
    key = os_release(os_id, os_version, codename)
    name = " ".join(key)
    build = TABLE.get(key)
    if build is None:
        why = (
            f"not known, check on host: lemfleet's table has no entry for {name}; read the release's own package "
            f"indexes (apt-cache policy {SERVER_PACKAGE} {GGML_PACKAGE}) on the host"
        )
        return DistroOffer(False, False, name, "", backend, (), (), tuple(gpu_targets), why, "")

    def refuse(why: str, covered: tuple[str, ...] = (), missing: tuple[str, ...] = ()) -> DistroOffer:
        return DistroOffer(True, False, name, build.suite, backend, (), covered, missing, why, build.source)

    if arch not in build.arches:
        return refuse(f"not known, check on host: the table has {name} for {', '.join(build.arches)} only, not {arch}")
    if not build.server:
        ggml = f"{build.ggml.name} {build.ggml.version} but " if build.ggml else "nothing: "
        return refuse(f"{name} ({build.suite}) has {ggml}no {SERVER_PACKAGE} package (llama-server)")
    chosen = build.backends.get(backend)
    if chosen is None:
        return refuse(f"{name} ({build.suite}) has no ggml {backend} backend package")
    assert build.ggml is not None
    covered = tuple(t for t in gpu_targets if backend != "hip" or t in chosen.gpu_targets)
    missing = tuple(t for t in gpu_targets if t not in covered)
    if missing:
        return refuse(
            f"{chosen.package.name if chosen.package else backend} {build.ggml.version} has no offload code for "
            f"{', '.join(missing)}; it covers {', '.join(chosen.gpu_targets)}",
            covered,
            missing,
        )
    packages = (*build.server, build.ggml, *((chosen.package,) if chosen.package else ()))
    what = f"{build.server[0].name} {build.server[0].version} with {build.ggml.name} {build.ggml.version}"
    targets = f", covering {', '.join(covered)}" if covered else ""
    why = f"{name} ({build.suite}) ships {what} and its {backend} backend{targets}"
    return DistroOffer(True, True, name, build.suite, backend, packages, covered, (), why, build.source)


def known_packages() -> tuple[str, ...]:
    """Every package name the distro source installs, on any release in the table."""
    return (SERVER_PACKAGE, SERVER_LIBRARY, GGML_PACKAGE, *BACKEND_PACKAGES.values())


_DEBIAN_VERSION = re.compile(r"([0-9]+:)?[0-9][A-Za-z0-9.+~-]*")


def versions_setting(name: str, value: Any) -> dict[str, str]:
    """``llama_cpp_distro_versions``: package -> Debian version, for packages of :func:`known_packages` only."""
    if value is None:
        return {}
    accepted = (
        f"a mapping of package to Debian version (e.g. {{'{GGML_PACKAGE}': '0.27.1-1'}}) for "
        f"{', '.join(known_packages())}, or empty for the table's versions"
    )
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{name}={value!r} is not valid; accepted: {accepted}")
    for package, version in value.items():
        if package not in known_packages() or not _DEBIAN_VERSION.fullmatch(version):
            raise ValueError(f"{name}={{{package!r}: {version!r}}} is not valid; accepted: {accepted}")
    return dict(value)


def with_versions(offer: DistroOffer, versions: Mapping[str, str]) -> DistroOffer:
    """``offer`` with the versions a setting names instead of the table's (the host checks coverage again)."""
    if not versions or not offer.available:
        return offer
    packages = tuple(replace(p, version=versions.get(p.name, p.version), source="llama_cpp_distro_versions")
                     if p.name in versions else p for p in offer.packages)  # fmt: skip
    if packages == offer.packages:
        return offer
    named = ", ".join(f"{p.name} {p.version}" for p in packages if p.name in versions)
    why = f"{offer.reason}; versions set by llama_cpp_distro_versions ({named}): what they cover is checked on the host"
    return replace(offer, packages=packages, reason=why)
