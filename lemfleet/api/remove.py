"""``remove``: decommission hosts, taking off everything lemfleet created on them and nothing else.

It runs the remove deploy (``roles/remove_deploy.py``, planned by :mod:`lemfleet.roles.remove_plan`)
in the same pyinfra child process as :func:`lemfleet.api.deploy`. Each object to remove is one
operation named after it, and each object kept (an operator's drop-in, a user lemfleet did not
create, driver repositories) an operation that changes nothing, so the result lists per host what
went (or, with ``dry``, what would go) and what stays. A second remove changes nothing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from lemfleet.api.display import TableView, html_table, text_table
from lemfleet.api.fleet import Fleet
from lemfleet.api.results import FleetDeploy, HostDeploy
from lemfleet.api.run import EventCallback, deploy

DEPLOY_NAME = "Remove lemfleet"
KEEP = "Keep "
HEADERS = ("host", "outcome", "removed", "kept", "error")


def remove_deploy_file() -> Path:
    """``roles/remove_deploy.py`` (``lemfleet.roles.remove_deploy`` in the wheel), found without running it."""
    spec = importlib.util.find_spec("lemfleet.roles.remove_deploy")
    assert spec is not None and spec.origin is not None, "lemfleet.roles.remove_deploy is part of the package"
    return Path(spec.origin)


def _short(name: str) -> str:
    """An operation's name without the deploy's prefix (``Remove lemfleet | ``)."""
    prefix = f"{DEPLOY_NAME} | "
    return name[len(prefix) :] if name.startswith(prefix) else name


@dataclass(frozen=True)
class HostRemoval(TableView):
    """One host: what was removed (with ``dry``: what would be), what stays, and any error."""

    host: str
    ok: bool
    dry: bool
    removed: tuple[str, ...]
    kept: tuple[str, ...]
    errors: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # removals that did not complete

    @classmethod
    def from_deploy(cls, result: HostDeploy, dry: bool) -> HostRemoval:
        names = [(_short(op.name), op) for op in result.operations]
        return cls(
            host=result.host,
            ok=result.ok,
            dry=dry,
            removed=tuple(n for n, op in names if op.changed and not n.startswith(KEEP)),
            kept=tuple(n[len(KEEP) :] for n, _ in names if n.startswith(KEEP)),
            errors=result.errors,
            failed=tuple(n for n, op in names if op.success is False),
        )

    @property
    def outcome(self) -> str:
        if not self.ok:
            return "failed"
        if not self.removed:
            return "nothing to remove"
        return "would remove" if self.dry else "removed"

    def cells(self) -> list[Any]:
        error = (self.errors or self.failed or ("",))[-1]
        return [self.host, self.outcome, len(self.removed), len(self.kept), error[:160]]

    def __str__(self) -> str:
        verb = "would remove" if self.dry else "removed"
        lines = [f"{self.host}: {self.outcome}"]
        lines += [f"  {verb}: {what.removeprefix('Remove ')}" for what in self.removed]
        lines += [f"  failed: {what}" for what in self.failed]
        lines += [f"  kept: {what}" for what in self.kept]
        lines += [f"  error: {e}" for e in self.errors]
        return "\n".join(lines)


@dataclass(frozen=True)
class FleetRemoval(TableView):
    hosts: tuple[HostRemoval, ...]
    dry: bool
    seconds: float
    log: str = field(repr=False, default="")

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    @property
    def removed(self) -> int:
        """Objects removed (that would be, in a dry run), over all hosts."""
        return sum(len(h.removed) for h in self.hosts)

    def __getitem__(self, name: str) -> HostRemoval:
        return next(h for h in self.hosts if h.host == name)

    def to_json(self) -> dict[str, Any]:
        hosts = [{**asdict(h), "outcome": h.outcome} for h in self.hosts]
        return {"ok": self.ok, "dry": self.dry, "seconds": self.seconds, "removed": self.removed, "hosts": hosts}

    def __str__(self) -> str:
        return "\n".join([text_table(HEADERS, [h.cells() for h in self.hosts]), *(str(h) for h in self.hosts)])

    def _repr_html_(self) -> str:
        what = "Dry run of a removal" if self.dry else "Removal"
        caption = f"{what} on {len(self.hosts)} host(s): {self.removed} object(s), {self.seconds:.1f} s"
        return html_table(
            HEADERS, [h.cells() for h in self.hosts], caption=caption, details=[str(h) for h in self.hosts]
        )


def from_deploy(result: FleetDeploy) -> FleetRemoval:
    hosts = tuple(HostRemoval.from_deploy(h, result.dry) for h in result.hosts)
    return FleetRemoval(hosts, dry=result.dry, seconds=result.seconds, log=result.log)


def remove(
    fleet: Fleet,
    *,
    limit: str | Iterable[str] | None = None,
    data: Mapping[str, Any] | Iterable[str] | None = None,
    dry: bool = False,
    on_event: EventCallback | None = None,
    echo: IO[str] | None = None,
    timeout: float | None = None,
) -> FleetRemoval:
    """Remove lemfleet from the fleet's hosts (or ``limit``); ``dry`` lists what would go and changes nothing.

    The service user, unit name and model directory are this fleet's settings (``data`` on top),
    together with what each host's ``deployed.json`` names. Settings are checked before any host
    is contacted (:class:`lemfleet.api.FleetSetupError`).
    """
    result = deploy(fleet, limit=limit, data=data, dry=dry, on_event=on_event, deploy_file=remove_deploy_file(),
                    echo=echo, timeout=timeout)  # fmt: skip
    return from_deploy(result)
