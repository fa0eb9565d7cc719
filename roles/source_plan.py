"""Where a host's llama-server comes from, and what each source would give it (pure).

``llama_cpp_source`` names the source. Three compile it on the host (or take
the build from the controller's cache): ``pypi-sdist`` (the default),
``git``, ``tarball``. Two more take the distribution's build:

- ``distro``: the release's own packages (roles/distro_builds.py). A host
  or plan they cannot serve is refused before anything changes on any host,
  with the reason (the release, the missing package, or the gfx targets the
  backend has no code for) and the sources that would work.
- ``auto``: ``distro`` where it serves the plan, else ``pypi-sdist``.

On a release the table does not know (Ubuntu, a later Debian), what the
distribution ships is decided on the host from its own package indexes
(roles/distro_index.py).

:func:`choose_source` also describes every source for the plan (``lemfleet
plan``, the API's plan result): available or not, the targets covered, the
version, and the expected time to serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lemfleet.roles.distro_builds import DistroOffer, distro_offer, with_versions
from lemfleet.roles.distro_index import index_offer
from lemfleet.roles.facts.apt_index import AptIndex
from lemfleet.roles.hostinfo import HostFacts
from lemfleet.roles.settings import SettingsError

COMPILE_METHODS = ("pypi-sdist", "git", "tarball")
SOURCES = (*COMPILE_METHODS, "distro", "auto")
AUTO_FALLBACK = "pypi-sdist"

# Cold compiles of llama-server on a 2-core test-bed host (README, "Measured"): CPU 12 min, HIP for one gfx
# 35.0 min, CUDA for one architecture 37.9 min. Vulkan was not measured. Scaled by cores below, which is a guess
# (compiling is mostly parallel); a build id already in the controller's cache installs in about a minute.
COMPILE_MINUTES_2_CORES: dict[str, float | None] = {"cpu": 12.0, "hip": 35.0, "cuda": 37.9, "vulkan": None}
# The distro install: apt's fixed cost, the download at an assumed 10 MB/s from a mirror or proxy, and unpacking
# at an assumed 100 MB/s; the CPU packages (about 7 MB) measured on a test-bed host are in the README.
APT_FIXED_SECONDS = 20.0
DOWNLOAD_BYTES_PER_SECOND = 10e6
UNPACK_BYTES_PER_SECOND = 100e6


@dataclass(frozen=True)
class SourceChoice:
    method: str  # the source the deploy uses: "distro" or one of COMPILE_METHODS
    reason: str
    offers: dict[str, dict[str, Any]] = field(default_factory=dict)  # "compile" and "distro"
    distro: DistroOffer | None = None  # set when method is "distro"
    refusal: str | None = None  # llama_cpp_source='distro' on a host or plan it cannot serve: why, and what would

    def check(self, host: str | None = None) -> SourceChoice:
        """This choice, or ``SettingsError`` with the refusal (before anything changes on any host)."""
        if self.refusal:
            raise SettingsError([self.refusal], host)
        return self


def compile_minutes(backend: str, cores: int) -> float | None:
    measured = COMPILE_MINUTES_2_CORES.get(backend)
    if measured is None:
        return None
    return round(measured * 2 / max(2, cores), 1)


def distro_seconds(offer: DistroOffer) -> float:
    seconds = APT_FIXED_SECONDS + offer.download_bytes / DOWNLOAD_BYTES_PER_SECOND
    return round(seconds + offer.installed_bytes / UNPACK_BYTES_PER_SECOND)


def compile_version(method: str, settings: Mapping[str, Any]) -> str:
    """What the compile would build: the sdist's version, the git tag or the tarball's pin."""
    if method == "git":
        return f"git {settings.get('llama_cpp_git_ref')}"
    if method == "tarball":
        return f"tarball sha256 {str(settings.get('llama_cpp_tarball_sha256'))[:12]}"
    return f"llama-cpp-python {settings.get('llama_cpp_sdist_version', '0.3.36')} sdist"


def compile_offer(
    method: str, backend: str, targets: tuple[str, ...], cores: int, settings: Mapping[str, Any]
) -> dict[str, Any]:
    minutes = compile_minutes(backend, cores)
    estimate = (
        f"about {minutes:g} min cold on {cores} cores (scaled from README's 2-core figure); "
        "about 1 min when the build id is in the controller's cache"
        if minutes is not None
        else f"not measured for {backend} (a cached build id installs in about 1 min)"
    )
    return {
        "source": method,
        "available": True,
        "targets": list(targets),
        "version": compile_version(method, settings),
        "seconds_to_serving": None if minutes is None else round(minutes * 60),
        "estimate": estimate,
        "reason": f"compiled on the host for exactly {', '.join(targets) or backend}",
    }


def distro_offer_json(offer: DistroOffer) -> dict[str, Any]:
    return {
        "source": "distro",
        "available": offer.available,
        "known": offer.known,
        "release": offer.release,
        "suite": offer.suite,
        "targets": list(offer.targets_covered),
        "missing_targets": list(offer.targets_missing),
        "version": offer.versions or None,
        "download_bytes": offer.download_bytes if offer.available else None,
        "installed_bytes": offer.installed_bytes if offer.available else None,
        "seconds_to_serving": distro_seconds(offer) if offer.available else None,
        "estimate": (
            f"about {distro_seconds(offer)} s: {offer.download_bytes / 1e6:.1f} MB of packages to fetch, "
            f"{offer.installed_bytes / 1e6:.0f} MB installed"
            + (" (the ROCm runtime the drivers step installs comes on top)" if offer.backend == "hip" else "")
            if offer.available
            else "-"
        ),
        "reason": offer.reason,
        "facts_from": offer.source or None,
    }


def choose_source(
    settings: Mapping[str, Any],
    *,
    os_id: str,
    os_version: str,
    codename: str,
    arch: str,
    backend: str,
    gpu_targets: tuple[str, ...],
    cores: int,
    host_index: AptIndex | None = None,
) -> SourceChoice:
    """The source for this host's plan, with every source's offer (and the refusal, when distro cannot serve it).

    ``host_index``: the host's own package indexes, which decide for a release the table does not know.
    """
    setting = settings.get("llama_cpp_source", AUTO_FALLBACK)
    offer = distro_offer(os_id, os_version, codename, arch, backend, gpu_targets)
    if not offer.known and host_index is not None:
        offer = index_offer(host_index, offer.release, arch, backend, gpu_targets)
    offer = with_versions(offer, settings.get("llama_cpp_distro_versions") or {})
    compile_method = setting if setting in COMPILE_METHODS else AUTO_FALLBACK
    offers = {
        "compile": compile_offer(compile_method, backend, gpu_targets, cores, settings),
        "distro": distro_offer_json(offer),
    }
    if setting in COMPILE_METHODS:
        return SourceChoice(setting, f"set by llama_cpp_source={setting!r} (compiled)", offers)
    if offer.available:
        why = f"llama_cpp_source={setting!r}: {offer.reason}"
        return SourceChoice("distro", why, offers, offer)
    if setting == "auto":
        return SourceChoice(AUTO_FALLBACK, f"llama_cpp_source='auto': compiled, since {offer.reason}", offers)
    if setting != "distro":
        raise SettingsError([f"llama_cpp_source={setting!r} is not valid; accepted: {', '.join(SOURCES)}"])
    would_work = ", ".join(repr(m) for m in COMPILE_METHODS)
    refusal = (
        f"llama_cpp_source='distro' cannot serve this host's {backend} plan"
        + (f" for {', '.join(gpu_targets)}" if gpu_targets else "")
        + f": {offer.reason}. Sources that would work: {would_work} (compiled for exactly these targets), "
        "or 'auto', which compiles where the distribution's build does not serve the plan"
    )
    return SourceChoice("distro", "llama_cpp_source='distro': refused", offers, None, refusal)


def choose_for_host(
    settings: Mapping[str, Any],
    facts: HostFacts,
    backend: str,
    targets: tuple[str, ...],
    host_index: AptIndex | None = None,
) -> SourceChoice:
    """:func:`choose_source` from a host's facts and its plan's backend and targets (and, for a release the
    table does not know, its package indexes: roles/distro_index.py)."""
    return choose_source(
        settings,
        os_id=facts.os_id,
        os_version=facts.os_version,
        codename=facts.os_codename,
        arch=facts.arch,
        backend=backend,
        gpu_targets=targets,
        cores=facts.cpu_logical_cores,
        host_index=host_index,
    )
