"""The data a driver plan is made of: what it reads about a host, and what it decides.

``DriverTarget`` is the little a driver plan needs to know about one host;
``DriverPlan`` is everything the deploy will put there. Both are plain frozen
data, so a plan can be printed for a whole fleet and compared in tests. The
render methods give the exact text that lands in files on the host.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lemfleet.roles.platforms import os_release
from lemfleet.roles.settings import SettingsError

BACKENDS = ("hip", "cuda", "vulkan", "cpu")
# The setting people change when a backend cannot be served on a release.
BACKEND_SETTING = "gpu_backend"
KERNEL_RELEASE = "{kernel_release}"  # stands in for `uname -r` until the host is known
MANAGED = "Managed by lemfleet (drivers)."


class DriverPlanError(SettingsError):
    """A backend, OS release and settings that cannot make a working GPU runtime."""

    def __init__(self, problem: str, host: str | None = None) -> None:
        super().__init__([problem], host)


@dataclass(frozen=True)
class DriverTarget:
    """What the driver plan reads about one host.

    ``runtime_working`` is the vendor tool answering (``rocminfo`` for hip,
    ``nvidia-smi`` for cuda, ``vulkaninfo`` for vulkan) and ``runtime_version``
    what it reported. ``kernel_driver_loaded`` means the kernel side is there
    already (``/dev/kfd`` for ROCm). ``compute_capabilities`` are the NVIDIA
    GPUs' ("8.9"), used to pick toolkit and kernel-module flavour.
    """

    os_id: str
    os_version: str
    os_codename: str
    backend: str
    runtime_working: bool = False
    runtime_version: str | None = None
    kernel_driver_loaded: bool = False
    container: bool = False
    arch: str = "x86_64"
    kernel_release: str | None = None
    compute_capabilities: tuple[str, ...] = ()
    driver_from_lemfleet: bool = False

    @property
    def release(self) -> str:
        """'22.04', '24.04', '12', '13' or 'sid': with ``os_id``, the key of the platform table's rows."""
        return os_release(self.os_id, self.os_version, self.os_codename)[1]

    @property
    def described(self) -> str:
        name = {"debian": "Debian", "ubuntu": "Ubuntu"}.get(self.os_id, self.os_id)
        codename = f" ({self.os_codename})" if self.os_codename and self.os_codename != "sid" else ""
        return f"{name} {self.release}{codename}"


@dataclass(frozen=True)
class AptKey:
    """A repository key fetched from ``url`` and stored, dearmored, at ``dest``."""

    url: str
    dest: str
    sha256: str | None = None  # of the file at ``url``, where it is known
    # The primary-key fingerprints the file must hold, exactly; checked on the host before it is installed.
    fingerprints: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyringDeb:
    """A keyring package (cuda-keyring) fetched from ``url``; installed only when its sha256 is ``sha256``."""

    url: str
    sha256: str


@dataclass(frozen=True)
class AptSource:
    """One deb822 source file, ``/etc/apt/sources.list.d/<name>.sources``."""

    name: str
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str
    architectures: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"/etc/apt/sources.list.d/{self.name}.sources"

    def deb822(self) -> str:
        """The file as pyinfra's ``apt.sources_file`` writes it (same fields, same order)."""
        lines = [
            "Types: deb",
            "URIs: " + " ".join(self.uris),
            "Suites: " + " ".join(self.suites),
            "Components: " + " ".join(self.components),
        ]
        if self.architectures:
            lines.append("Architectures: " + " ".join(self.architectures))
        lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class AptPin:
    """An apt preferences file, ``/etc/apt/preferences.d/<name>``."""

    name: str
    pin: str  # "release o=repo.radeon.com"
    priority: int
    packages: str = "*"

    @property
    def path(self) -> str:
        return f"/etc/apt/preferences.d/{self.name}"

    def render(self) -> str:
        return f"# {MANAGED}\nPackage: {self.packages}\nPin: {self.pin}\nPin-Priority: {self.priority}\n"


@dataclass(frozen=True)
class ConfigFile:
    path: str
    content: str


NOUVEAU_BLACKLIST = ConfigFile(
    # The file and lines NVIDIA's installation guide asks for before its driver loads.
    "/etc/modprobe.d/blacklist-nouveau.conf",
    f"# {MANAGED}\nblacklist nouveau\noptions nouveau modeset=0\n",
)


@dataclass(frozen=True)
class DriverPlan:
    """Everything the drivers step puts on one host, and why.

    ``kernel_packages`` are the kernel driver and its matching userspace: they
    are installed on their own so that the deploy can reboot exactly when one
    of them changed. ``packages`` are the runtime and the build dependencies of
    llama.cpp's backend: what the host that compiles the build needs.
    ``runtime_packages`` are what a host that receives a build compiled
    elsewhere needs to run it: never the SDK or a -dev package, except where
    the plan says it cannot tell them apart. A name containing
    ``{kernel_release}`` is completed with the host's ``uname -r`` by
    :meth:`for_kernel`.
    """

    backend: str
    source: str  # "amd-repo", "nvidia-repo", "debian", "ubuntu", "existing" or "none"
    keys: tuple[AptKey, ...] = ()
    keyring_debs: tuple[KeyringDeb, ...] = ()  # keyring packages (cuda-keyring), pinned by sha256
    sources: tuple[AptSource, ...] = ()
    pins: tuple[AptPin, ...] = ()
    files: tuple[ConfigFile, ...] = ()
    kernel_packages: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    runtime_packages: tuple[str, ...] = ()
    service_groups: tuple[str, ...] = ()
    reboot: bool = False  # allowed by the settings, when a kernel package changes
    reasons: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        parts = (self.keys, self.keyring_debs, self.sources, self.pins, self.files)
        return not any(parts) and not (self.kernel_packages or self.packages or self.service_groups)

    @property
    def reboot_may_be_needed(self) -> bool:
        return bool(self.kernel_packages or self.files)

    @property
    def needs_kernel_release(self) -> bool:
        return any(KERNEL_RELEASE in name for name in self.kernel_packages)

    def for_kernel(self, kernel_release: str) -> DriverPlan:
        """This plan with ``{kernel_release}`` in package names replaced by ``uname -r``."""
        names = tuple(n.replace(KERNEL_RELEASE, kernel_release) for n in self.kernel_packages)
        return dataclasses.replace(self, kernel_packages=names)

    def describe(self) -> str:
        """A few lines for people: what will be installed from where, and why."""
        lines = [f"backend {self.backend}, source {self.source}"]
        lines += [f"  key {k.url} -> {k.dest}" for k in self.keys]
        lines += [f"  keyring package {deb.url} (sha256 {deb.sha256[:12]})" for deb in self.keyring_debs]
        lines += [f"  source {s.path}: {' '.join(s.uris)} {' '.join(s.suites)}" for s in self.sources]
        lines += [f"  pin {p.path}: {p.pin} = {p.priority}" for p in self.pins]
        lines += [f"  file {f.path}" for f in self.files]
        if self.kernel_packages:
            lines.append("  kernel driver: " + " ".join(self.kernel_packages))
        if self.packages:
            lines.append("  packages: " + " ".join(self.packages))
        if self.service_groups:
            lines.append("  service user groups: " + " ".join(self.service_groups))
        lines += [f"  - {reason}" for reason in self.reasons]
        return "\n".join(lines)
