"""Apply a :class:`DriverPlan` to a host with pyinfra operations.

The plan has made every decision; this is a direct mapping of its fields to
operations, in the order apt needs them: keys, sources and pins, one
``apt-get update`` when any of them changed, then the kernel driver on its
own (so that its ``did_change`` says whether to reboot), then the runtime and
build packages, then the service user's groups.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FindInFile
from pyinfra.facts.server import KernelVersion
from pyinfra.operations import apt, files, server
from pyinfra.operations.util import any_changed

from lemfleet.roles.drivers.defaults import DEFAULTS
from lemfleet.roles.drivers.keys import pinned_download, pinned_key
from lemfleet.roles.drivers.plan import plan_drivers, target_from_facts
from lemfleet.roles.drivers.plan_data import MANAGED, NOUVEAU_BLACKLIST, DriverPlan
from lemfleet.roles.drivers.rocm import RADEON_PIN
from lemfleet.roles.hostinfo import HostFacts

DOWNLOADS = "/var/cache/lemfleet/drivers"
# What fetching a key or keyring package needs on a bare host.
FETCH_TOOLS = ["ca-certificates", "curl", "gpg"]


def driver_from_lemfleet() -> bool:
    """Whether an earlier run installed this host's GPU driver: a file only it writes is there."""
    marks = (RADEON_PIN.path, NOUVEAU_BLACKLIST.path)
    return any(host.get_fact(FindInFile, path=path, pattern=MANAGED) for path in marks)


def plan_for_host(facts: HostFacts, backend: str, settings: Mapping[str, Any]) -> DriverPlan:
    """:func:`plan_drivers` for the current host, with its kernel release and driver's origin."""
    if backend == "cpu":  # nothing to install: spare the host the kernel and marker probes
        return plan_drivers(target_from_facts(facts, backend), settings)
    target = target_from_facts(
        facts,
        backend,
        kernel_release=host.get_fact(KernelVersion),
        driver_from_lemfleet=driver_from_lemfleet(),
    )
    return plan_drivers(target, settings)


def _always() -> bool:
    return True


def reboot_allowed(plan: DriverPlan, host_name: str) -> bool:
    """Whether a changed kernel driver may reboot this host: never the machine lemfleet runs on."""
    return plan.reboot and plan.reboot_may_be_needed and host_name != "@local"


@deploy("Install GPU drivers and runtime", data_defaults=DEFAULTS)
def install_drivers(
    plan: DriverPlan, service_user: str | None = None, compiles: Callable[[], bool] | None = None
) -> None:
    """Install what ``plan`` lists; reboot only when its kernel driver changed.

    ``service_user``, when given, is added to the plan's groups (render, video)
    so that the service can open the GPU's device nodes. ``compiles``, asked
    when the operations run, says whether this host compiles llama-server
    (roles/build_ops.py); when it does not, only the runtime packages are installed.
    """
    if plan.empty:
        host.noop(f"drivers: nothing to install for backend {plan.backend}")
        return
    if plan.needs_kernel_release:
        plan = plan.for_kernel(host.get_fact(KernelVersion))

    # An update inside the kernel driver's apt.packages would count as a change
    # of the driver and reboot the host, so the lists are refreshed on their own.
    apt.update(name="Refresh apt lists older than an hour", cache_time=3600)
    repo_ops: list[OperationMeta] = []
    if plan.keys or plan.keyring_debs:
        apt.packages(name="Install the tools that fetch repository keys", packages=FETCH_TOOLS)
    if plan.keyring_debs or any(key.sha256 for key in plan.keys):
        files.directory(name=f"Create {DOWNLOADS}", path=DOWNLOADS, mode="755")
    for key in plan.keys:
        if key.fingerprints:  # fetched and checked on the host before apt trusts it (roles/drivers/keys.py)
            repo_ops.append(pinned_key(name=f"Install the apt key {key.dest}", url=key.url, dest=key.dest,
                                       fingerprints=key.fingerprints))  # fmt: skip
            continue
        src = key.url
        if key.sha256:
            src = f"{DOWNLOADS}/{posixpath.basename(key.url)}"
            pinned_download(name=f"Download {key.url}", url=key.url, dest=src, sha256=key.sha256)
        repo_ops.append(apt.key(name=f"Install the apt key {key.dest}", src=src, dest=key.dest))
    for deb in plan.keyring_debs:
        path = f"{DOWNLOADS}/{posixpath.basename(deb.url)}"
        repo_ops.append(pinned_download(name=f"Download {deb.url}", url=deb.url, dest=path, sha256=deb.sha256))
        repo_ops.append(apt.deb(name=f"Install {posixpath.basename(deb.url)}", src=path))
    for source in plan.sources:
        repo_ops.append(
            apt.sources_file(
                name=f"Add the apt source {source.path}",
                filename=source.name,
                uris=list(source.uris),
                suites=list(source.suites),
                components=list(source.components),
                architectures=list(source.architectures) or None,
                signed_by=source.signed_by,
            )
        )
    for pin in plan.pins:
        repo_ops.append(files.put(name=f"Pin {pin.pin}", src=StringIO(pin.render()), dest=pin.path, mode="644"))
    if repo_ops:
        apt.update(name="Read the new repositories", _if=any_changed(*repo_ops))

    blacklist_ops: list[OperationMeta] = []
    for config in plan.files:
        blacklist_ops.append(
            files.put(
                name=f"Write {config.path}",
                src=StringIO(config.content),
                dest=config.path,
                mode="644",
            )
        )
    kernel_ops = list(blacklist_ops)
    if plan.kernel_packages:
        kernel_ops.append(
            apt.packages(
                name="Install the GPU kernel driver",
                packages=list(plan.kernel_packages),
            )
        )
    if plan.files:
        server.shell(
            name="Rebuild the initramfs with the new module options",
            commands=["update-initramfs -u"],
            _if=any_changed(*blacklist_ops),
        )
    # Without recommends: Debian's CUDA toolkit would otherwise recommend its way
    # to a proprietary nvidia-kernel-dkms, even next to a kept or open driver.
    if plan.runtime_packages:
        apt.packages(
            name=f"Install the {plan.backend} runtime packages",
            packages=list(plan.runtime_packages),
            no_recommends=True,
        )
    if plan.packages:
        # Only where llama-server is compiled: a host that receives a build needs no SDK or -dev package.
        apt.packages(
            name=f"Install the {plan.backend} runtime and build packages",
            packages=list(plan.packages),
            no_recommends=True,
            _if=compiles or _always,
        )

    for group in plan.service_groups:
        server.group(name=f"Ensure the group {group}", group=group, system=True)
    if service_user and plan.service_groups:
        server.user(
            name=f"Let {service_user} open the GPU",
            user=service_user,
            groups=list(plan.service_groups),
            append=True,
            system=True,
            ensure_home=False,
        )

    if reboot_allowed(plan, host.name):
        server.reboot(
            name="Reboot to load the new kernel driver",
            reboot_timeout=host.data.get("drivers_reboot_timeout"),
            _if=any_changed(*kernel_ops),
        )
