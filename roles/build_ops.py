"""Which part a host plays for its build id, and the operations that move a build through the controller.

- :func:`build_role`: ``installed`` (nothing to do), ``local`` (no cache: it
  compiles for itself), ``receive`` (the controller's cache holds the build)
  or ``shared`` (the cache lacks it: one host compiles, chosen when the
  operations run, and the others receive it; roles/build_share.py).
- :func:`publish_build`: on the host that compiled, pack the build, record the
  bundle's sha256 there, fetch both and the build's ``SHA256SUMS`` to the
  controller, which keeps the bundle only if it matches (roles/build_cache.py).
- :func:`receive_build`: push the cached bundle to a host, which checks its
  sha256 against the record before unpacking, the files against the per-file
  sums, and runs ``--version`` as ``nobody`` before renaming it into place.
  A mismatch is refused with the two sha256s, and nothing is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import FileDownloadCommand, FileUploadCommand, FunctionCommand, operation
from pyinfra.context import state as pyinfra_state

from lemfleet.roles import build_cache, push_stream
from lemfleet.roles.build_share import SHARE, BuildShareError

ROOT = "/opt/lemfleet"
BUILDS = f"{ROOT}/llama.cpp"
# The unprivileged account that compiles: it owns only the build tree of the build it is compiling.
BUILD_USER = "lemfleet-build"
# Build output never runs as root: ``--version`` of a build runs as this user where there is no build user.
RUN_AS = "nobody"


def bundle_path(bid: str) -> str:
    return f"{ROOT}/build/{bid}.tar.gz"


def host_failed(name: str) -> bool:
    """Whether pyinfra has failed this host in the current run (or an operation of it failed, under --no-wait)."""
    state = pyinfra_state
    target = state.inventory.get_host(name)
    return target in state.failed_hosts or state.get_results_for_host(target).error_ops > 0


@dataclass(frozen=True)
class BuildRole:
    bid: str
    kind: str  # "installed", "local", "receive" or "shared"
    host: str
    cache: Path | None

    def compiles(self) -> bool:
        """Whether this host compiles the build (asked when the operations run: a ``_if``)."""
        if self.kind == "shared":
            try:
                return SHARE.is_leader(self.bid, self.host, host_failed)
            except BuildShareError:
                return False
        return self.kind == "local"


def build_role(bid: str, installed: bool, cache: Path | None, entry_exists: bool) -> BuildRole:
    """This host's part for ``bid``; a ``shared`` host is registered with its place in the inventory."""
    name = host.name
    if installed:
        return BuildRole(bid, "installed", name, cache)
    if cache is None:
        return BuildRole(bid, "local", name, cache)
    if entry_exists:
        return BuildRole(bid, "receive", name, cache)
    order = [h.name for h in pyinfra_state.inventory].index(name)
    SHARE.register(bid, name, order)
    return BuildRole(bid, "shared", name, cache)


def _failing(message: str) -> str:
    return f"echo {quote('lemfleet: ' + message)} >&2; exit 1"


@operation(is_idempotent=False)
def publish_build(role: BuildRole):
    """Pack the build just compiled here, record its sha256 here, and keep it in the controller's cache."""
    bid, bundle = role.bid, bundle_path(role.bid)
    recorded = f"{bundle}.sha256"
    assert role.cache is not None
    yield (
        f"tar -czf {quote(bundle + '.new')} -C {quote(BUILDS)} {quote(bid)} && "
        f"sha256sum {quote(bundle + '.new')} | cut -d' ' -f1 > {quote(recorded)} && mv -f "
        f"{quote(bundle + '.new')} {quote(bundle)}"
    )
    partial = role.cache / f".{bid}.{os.getpid()}.{host.name}.partial"
    parts = {"bundle": partial, "sha": partial.with_suffix(".sha256"), "sums": partial.with_suffix(".sums")}
    yield FileDownloadCommand(bundle, str(parts["bundle"]))
    yield FileDownloadCommand(recorded, str(parts["sha"]))
    yield FileDownloadCommand(f"{BUILDS}/{bid}/{build_cache.SUMS}", str(parts["sums"]))
    yield FunctionCommand(_publish, (role, parts), {})
    yield f"rm -f {quote(bundle)} {quote(recorded)}"


def _publish(state: Any, host: Any, role: BuildRole, parts: dict[str, Path]) -> bool:  # pyinfra passes state, host
    assert role.cache is not None
    try:
        entry = build_cache.publish(
            role.cache, role.bid, parts["bundle"], parts["sha"].read_text(), parts["sums"].read_text(), host.name
        )
    except (build_cache.BuildTrustError, OSError) as err:
        host.log_styled(f"lemfleet: {err}", fg="red")
        return False
    finally:
        for name in ("sha", "sums"):
            parts[name].unlink(missing_ok=True)
    SHARE.publish(role.bid)
    host.log_styled(f"build {role.bid} is in the controller's cache, sha256 {entry.bundle_sha256[:12]}", fg="green")
    return True


def _wait_for_leader(state: Any, host: Any, role: BuildRole) -> bool:
    try:
        leader = SHARE.wait(role.bid, host_failed)
    except BuildShareError as err:
        host.log_styled(f"lemfleet: {err}", fg="red")
        return False
    host.log_styled(f"build {role.bid}: compiled by {leader}, received through the controller", fg="cyan")
    return True


@operation()
def receive_build(role: BuildRole):
    """Install the controller's cached build ``role.bid``, verified against the sha256 its building host recorded."""
    bid = role.bid
    if not pyinfra_state.is_executing:
        # Asked while the deploy code runs (what would change): the leader is not chosen yet.
        yield "true  # receive the build from the controller's cache, sha256 verified"
        return
    if role.compiles():
        host.noop(f"build {bid} is compiled on this host")
        return
    if role.kind == "shared":
        yield FunctionCommand(_wait_for_leader, (role,), {})
    assert role.cache is not None
    try:
        entry = build_cache.read_entry(role.cache, bid)
    except build_cache.BuildTrustError as err:
        yield _failing(str(err))
        return
    if entry is None:
        yield _failing(f"build {bid} is not in the controller's cache {role.cache}; nothing was installed")
        return
    tmp = f"{bundle_path(bid)}.partial"
    if push_stream.can_stream(str(entry.bundle)):  # under the operation's sudo, as the model push
        receive = push_stream.remote_command(f"cat > {quote(tmp)}", push_stream.escalation())
        yield FunctionCommand(push_stream.push, (str(entry.bundle), receive), {})
    else:
        yield FileUploadCommand(str(entry.bundle), tmp, remote_temp_filename=host.get_temp_filename(tmp))
    yield install_script(bid, tmp, entry)


def install_script(bid: str, tmp: str, entry: build_cache.CacheEntry) -> str:
    """Shell that checks a received bundle and installs it as ``BUILDS/bid``; on any mismatch, nothing stays."""
    new, dest = quote(f"{BUILDS}/{bid}.new"), quote(f"{BUILDS}/{bid}")
    refused = (
        quote(f"lemfleet: build {bid}: the artifact received has sha256 ")
        + '"$actual"'
        + quote(
            f", not the {entry.bundle_sha256} {entry.described()} when it was built: refused, nothing was installed"
        )
    )
    files_refused = (
        f"build {bid}: its files do not match the sha256 sums {entry.described()} when it was built: "
        "refused, nothing was installed"
    )
    broken = f"build {bid} does not start on this host as {RUN_AS} (a runtime library missing?); nothing was installed"
    sums = quote(f"{BUILDS}/{bid}.new/{build_cache.SUMS}")
    return "\n".join(
        [
            "set -u",
            f"actual=$(sha256sum {quote(tmp)} | cut -d' ' -f1)",
            f'[ "$actual" = {quote(entry.bundle_sha256)} ] || {{ rm -f {quote(tmp)}; echo {refused} >&2; exit 1; }}',
            f"rm -rf {new} && mkdir -p {new} && tar -xzf {quote(tmp)} --no-same-owner -C {new} --strip-components=1 "
            f"&& printf %s {quote(entry.sums_text())} > {sums} "
            f"&& ( cd {new} && sha256sum --check --strict --quiet {quote(build_cache.SUMS)} ) "
            f"|| {{ rm -rf {new} {quote(tmp)}; echo {quote('lemfleet: ' + files_refused)} >&2; exit 1; }}",
            f"out=$(runuser -u {RUN_AS} -- {new}/bin/llama-server --version 2>&1) "
            f'|| {{ printf "%s\\n" "$out" | tail -n 5 >&2; rm -rf {new} {quote(tmp)}; '
            f"echo {quote('lemfleet: ' + broken)} >&2; "
            "exit 1; }",
            f"mv -T {new} {dest} && rm -f {quote(tmp)}",
        ]
    )
