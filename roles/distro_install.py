"""llama_cpp_source='distro' on the host: the release's own llama-server and ggml backend, pinned and checked.

The plan chose the packages and versions (roles/source_plan.py, from the table
in roles/distro_builds.py). Here, on the host, one script:

1. fetches exactly those versions as .debs (``apt-get download pkg=version``)
   into ``/opt/lemfleet/llama.cpp/<distro-id>/debs/``, or takes the .debs kept
   there by an earlier deploy of the same state, so that state reinstalls
   after the archive has moved on;
2. installs them (apt resolves their dependencies) and holds them
   (``apt-mark hold``), so an unattended upgrade cannot change what serves
   without the gate: a new version is a deploy with new versions
   (``llama_cpp_distro_versions``), and it passes the gate like any build;
3. checks that each package is at its planned version, that llama-server
   runs, that the backend library is there and, for HIP, that its offload
   bundles hold code for every planned gfx target (:func:`coverage_script`),
   refusing otherwise;
4. writes ``build.json`` (the package versions in place of a compile's
   identity) and ``bin/llama-server`` -> ``/usr/bin/llama-server``.

The directory is a build like any other under ``/opt/lemfleet/llama.cpp``:
``current`` points at it, the unit runs ``current/bin/llama-server`` under
lemfleet's own hardened unit (never the package's units: see the README), the
deploy record names it, and pruning keeps it while it serves or may serve
again. The distro id hashes the backend and the package versions only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server

from lemfleet.roles.distro_builds import BACKEND_LIBRARIES, BACKENDS_DIR, SERVER_PACKAGE, DistroOffer
from lemfleet.roles.hoststate import path_state
from lemfleet.roles.llama_cpp import BUILDS, CURRENT
from lemfleet.roles.llama_sources import Source
from lemfleet.roles.ops import atomic_link, directory
from lemfleet.roles.plan import HostPlan
from lemfleet.roles.source_plan import COMPILE_METHODS

SERVER_BINARY = "/usr/bin/llama-server"
# The package's postinst may fetch a web UI from the internet when asked to; lemfleet answers for it: the UI shipped
# in the package (the debconf default, set explicitly so that a changed default cannot make a deploy download).
DEBCONF = "llama.cpp-tools llama.cpp-tools/default-ui select simplechat"
# clang's offload bundles name each target as <kind>-amdgcn-amd-amdhsa--<gfx>[:feature]; grep reads them from the .so.
OFFLOAD_ID = "amdgcn-amd-amdhsa--gfx[0-9a-f]+"


@dataclass(frozen=True)
class DistroState:
    """One host's distro build: its id, directory and the exact packages."""

    offer: DistroOffer
    backend: str
    gpu_targets: tuple[str, ...]

    @classmethod
    def of(cls, offer: DistroOffer, plan: HostPlan) -> DistroState:
        return cls(offer, plan.backend, tuple(plan.gpu_targets))

    @property
    def versions(self) -> dict[str, str]:
        return self.offer.versions

    @property
    def build_id(self) -> str:
        identity = {"source": "distro", "backend": self.backend, "packages": self.versions}
        return "distro-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def path(self) -> str:
        return f"{BUILDS}/{self.build_id}"

    def build_json(self) -> str:
        return json.dumps(
            {
                "build_id": self.build_id,
                "backend": self.backend,
                "source": "distro",
                "suite": self.offer.suite,
                "packages": self.versions,
                "gpu_targets": list(self.gpu_targets),
            },
            sort_keys=True,
        )

    @property
    def source(self) -> Source:
        """What the deploy record's ``build.source`` names: "distro-<id>"."""
        return Source(method="distro", source_id=self.build_id)

    def managed_paths(self) -> list[str]:
        return [BUILDS, CURRENT, self.path, f"{self.path}/build.json", f"{self.path}/bin/llama-server"]

    def record_build(self, planned: dict[str, Any]) -> dict[str, Any]:
        """The deploy record's ``build``: this directory, the package versions in place of a compiled id, and
        where their .debs are kept (a rollback to this state reinstalls them: roles/distro_release.py)."""
        return {**planned, "id": self.build_id, "path": self.path, "source": "distro", "packages": self.versions,
                "debs": f"{self.path}/debs"}  # fmt: skip


def dpkg_query_command(packages: Iterable[str]) -> str:
    """``dpkg-query`` printing ``package<TAB>version<TAB>Status-Abbrev`` for ``packages``.

    :func:`parse_dpkg` reads its output.
    """
    names = " ".join(quote(p) for p in packages)
    return f"dpkg-query -W -f='${{Package}}\\t${{Version}}\\t${{db:Status-Abbrev}}\\n' {names} 2>/dev/null"


class DpkgVersions(FactBase):
    """Installed version and hold of each package. Sample output (``dpkg-query``'s Status-Abbrev)::

    llama.cpp-tools	1:0.7.0+dfsg-2	hi
    libggml0	0.27.0-1	ii
    """

    def command(self, packages: tuple[str, ...]) -> str:
        return f"{dpkg_query_command(packages)} || true"

    def process(self, output: Iterable[str]) -> dict[str, tuple[str, bool]]:
        return parse_dpkg(output)


def parse_dpkg(lines: Iterable[str]) -> dict[str, tuple[str, bool]]:
    """``{package: (version, held)}`` for installed packages only (Status-Abbrev ``ii``/``hi``)."""
    found: dict[str, tuple[str, bool]] = {}
    for line in lines:
        fields = line.rstrip("\n").split("\t")
        if len(fields) == 3 and fields[2][1:2] == "i":
            found[fields[0]] = (fields[1], fields[2].startswith("h"))
    return found


def coverage_script(library: str, targets: Iterable[str], listing: str) -> str:
    """Shell: list the gfx targets the offload bundles in ``library`` hold into ``listing``; fail naming a missing one.

    A HIP build of ggml carries one code object per target in clang offload bundles
    (``__CLANG_OFFLOAD_BUNDLE__``), each named ``hipv4-amdgcn-amd-amdhsa--gfx1030`` or the like; the names
    are plain bytes in the .so, so ``grep -ao`` reads them without ROCm's tools (``clang-offload-bundler
    --list`` reads the same header, but needs the bundle cut out of the ELF section first).
    """
    wanted = " ".join(quote(t) for t in targets)
    work = ", ".join(repr(m) for m in COMPILE_METHODS)
    return (
        f"grep -aoE {quote(OFFLOAD_ID)} {quote(library)} | sed 's/.*--//' | sort -u > {quote(listing)}; "
        f"[ -s {quote(listing)} ] || "
        f"{{ echo {quote(f'lemfleet: no offload targets could be read from {library}')} >&2; "
        "exit 1; }; "
        f'for t in {wanted}; do grep -qx "$t" {quote(listing)} || {{ '
        f'echo {quote(f"lemfleet: {library} has no code for")} "$t" '
        f'"(it covers: $(tr "\\n" " " < {quote(listing)}));" '
        f"{quote(f'sources that would work: {work}')} >&2; exit 1; }}; done"
    )


def install_script(distro: DistroState) -> str:
    """The shell that fetches, installs, holds and checks the packages, then places the build (pure, unit-tested)."""
    d, new = quote(distro.path), quote(distro.path + ".new")
    pins = [f"{name}={version}" for name, version in distro.versions.items()]
    names = " ".join(quote(name) for name in distro.versions)
    failed = f"lemfleet: installing {distro.build_id} from {distro.offer.suite} failed"
    lines = [
        "set -eu",
        "export DEBIAN_FRONTEND=noninteractive",
        f"echo {quote(DEBCONF)} | debconf-set-selections",
        f"rm -rf {new} && mkdir -p {new}/bin {new}/debs",
        # The .debs an earlier deploy of this state kept: they install after the archive has moved on.
        f"if ls {d}/debs/*.deb >/dev/null 2>&1; then cp {d}/debs/*.deb {new}/debs/; else "
        f"apt-get update -q >/dev/null && ( cd {new}/debs && "
        f"apt-get download -q -o APT::Sandbox::User=root {' '.join(quote(p) for p in pins)} ) "
        f"|| {{ echo {quote(failed + ': the archive has not these versions: ' + ' '.join(pins))} >&2; exit 1; }}; fi",
        f"apt-get install -y -q --no-install-recommends --allow-downgrades --allow-change-held-packages "
        f"{new}/debs/*.deb",
        f"apt-mark hold {names} >/dev/null",
    ]
    for name, version in distro.versions.items():
        lines.append(
            f"v=$(dpkg-query -W -f='${{Version}}' {quote(name)}); [ \"$v\" = {quote(version)} ] || "
            f'{{ echo "lemfleet: {name} is $v after the install, not {version}" >&2; exit 1; }}'
        )
    lines.append(f"{SERVER_BINARY} --version > {new}/version.txt 2>&1 || {{ cat {new}/version.txt >&2; exit 1; }}")
    if distro.backend == "cpu":
        lines.append(f"ls {BACKENDS_DIR}/libggml-cpu-*.so >/dev/null")
    else:
        library = BACKEND_LIBRARIES[distro.backend]
        lines.append(f"[ -f {quote(library)} ] || {{ echo {quote(f'lemfleet: {library} is missing')} >&2; exit 1; }}")
        if distro.backend == "hip":
            lines.append(coverage_script(library, distro.gpu_targets, f"{distro.path}.new/offload-targets.txt"))
    lines += [
        f"echo {quote(distro.build_json())} > {new}/build.json",
        f"ln -sfn {SERVER_BINARY} {new}/bin/llama-server",
        f"rm -rf {d} && mv -T {new} {d}",
    ]
    return "\n".join(lines)


def is_in_place(distro: DistroState, installed: dict[str, tuple[str, bool]]) -> bool:
    """The build directory is this state's, and every package is installed at its version and held."""
    record = path_state(f"{distro.path}/build.json")
    expected = hashlib.sha256((distro.build_json() + "\n").encode()).hexdigest()
    packages_ok = all(installed.get(name) == (version, True) for name, version in distro.versions.items())
    return record.sha256 == expected and path_state(f"{distro.path}/bin/llama-server").exists and packages_ok


@deploy("Install llama-server from the distribution")
def install_distro(distro: DistroState) -> OperationMeta:
    """Install, hold and check the distribution's packages, then point ``current`` at their build directory.

    Returns the link operation, whose ``did_change`` tells the server step that what serves changed.
    """
    directory(name=f"Directory {BUILDS}", path=BUILDS)
    installed = host.get_fact(DpkgVersions, packages=tuple(distro.versions)) or {}  # None: no output
    named = ", ".join(f"{name} {version}" for name, version in distro.versions.items())
    if is_in_place(distro, installed):
        host.noop(f"{named} installed and held ({distro.build_id})")
    else:
        server.shell(name=f"Install {SERVER_PACKAGE} from {distro.offer.suite}: {named}",
                     commands=[install_script(distro)])  # fmt: skip
    return atomic_link(
        name=f"Switch to {distro.build_id} (distro)", path=CURRENT, target=distro.path, previous=f"{BUILDS}/previous"
    )
