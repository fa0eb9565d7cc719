"""What the API returns: typed, JSON-ready results with a text and an HTML view.

Each result keeps the data a caller needs as attributes (no text to parse), gives it back as
plain JSON with ``to_json()``, prints as a table, and renders as an HTML table in a notebook.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

from lemfleet.api.display import TableView, html_table, text_table
from lemfleet.smoke_result import SmokeResult, Step


@dataclass(frozen=True)
class Event:
    """One live event of a run: a host connected, an operation started or finished, a host message.

    ``kind`` is one of ``run_started``, ``host_connected``, ``host_unreachable``, ``stage``,
    ``operation_started``, ``operation_done``, ``operation_failed``, ``host_message``,
    ``run_stopped``, ``setup_failed`` and ``result``.
    """

    kind: str
    time: float
    host: str | None = None
    operation: str | None = None
    changed: bool | None = None
    message: str | None = None
    level: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(
            kind=data["event"],
            time=data["time"],
            host=data.get("host"),
            operation=data.get("operation"),
            changed=data.get("changed"),
            message=data.get("message"),
            level=data.get("level"),
        )

    def __str__(self) -> str:
        where = f"[{self.host}] " if self.host else ""
        what = self.operation or ""
        if self.changed is not None:
            what += f" ({'changed' if self.changed else 'no change'})"
        text = ": ".join(p for p in (what.strip(), self.message or "") if p)
        return f"{where}{self.kind}" + (f": {text}" if text else "")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return f"<code>{html.escape(str(self))}</code>"


# -- plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostPlan(TableView):
    """One host's plan (the keys of ``lemfleet plan --json``, see lemfleet/plan_cli.py), or its errors."""

    host: str
    ok: bool
    errors: tuple[str, ...]
    row: dict[str, Any]

    @property
    def backend(self) -> str | None:
        return self.row.get("backend")

    @property
    def reasons(self) -> dict[str, str]:
        return dict(self.row.get("reasons") or {})

    @property
    def llama_cpp_source(self) -> str | None:
        """The source the deploy would use: "distro", or the compile source ("pypi-sdist", "git", "tarball")."""
        return self.row.get("llama_cpp_source")

    @property
    def sources(self) -> dict[str, dict[str, Any]]:
        """What each source would give this host ("compile", "distro"); the keys are in lemfleet/plan_cli.py."""
        return dict(self.row.get("sources") or {})

    def cells(self) -> list[Any]:
        row = self.row
        chosen = [g for g in row.get("gpus") or [] if g.get("chosen")]
        gpus = ", ".join(str(g.get("name")) for g in chosen) or ("-" if self.ok else "")
        targets = [*row.get("gpu_targets", []), *row.get("cuda_architectures", [])]
        quant = (row.get("quant") or {}).get("value")
        flags = (
            f"-ngl {row.get('n_gpu_layers')} -t {row.get('threads')} -c {row.get('ctx_size')} -np {row.get('parallel')}"
        )
        status = "ok" if self.ok else "error"
        return [self.host, status, row.get("backend"), gpus, targets, quant, flags if self.ok else "-"]

    def __str__(self) -> str:
        return str(FleetPlan((self,)))

    def _repr_html_(self) -> str:
        return FleetPlan((self,))._repr_html_()


PLAN_HEADERS = ("host", "status", "backend", "gpus", "targets", "quant", "flags")


@dataclass(frozen=True)
class FleetPlan(TableView):
    hosts: tuple[HostPlan, ...]

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    def __getitem__(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.host == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "hosts": [{"host": h.host, "ok": h.ok, "errors": list(h.errors), **h.row} for h in self.hosts],
        }

    def _details(self) -> list[str]:
        out = []
        for h in self.hosts:
            lines = [f"{k}: {v}" for k, v in h.reasons.items()] + list(h.errors) + list(h.row.get("warnings") or [])
            out.append("\n".join(lines))
        return out

    def __str__(self) -> str:
        return text_table(PLAN_HEADERS, [h.cells() for h in self.hosts])

    def _repr_html_(self) -> str:
        caption = f"Plan for {len(self.hosts)} host(s)"
        return html_table(PLAN_HEADERS, [h.cells() for h in self.hosts], caption=caption, details=self._details())


# -- deploy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OperationResult(TableView):
    name: str
    changed: bool
    success: bool | None  # None: not run (a dry run, or an earlier step failed)
    stderr: tuple[str, ...] = ()

    def cells(self) -> list[Any]:
        status = "not run" if self.success is None else "ok" if self.success else "failed"
        return [self.name, "changed" if self.changed else "no change", status, (self.stderr or ("",))[-1][:160]]

    def __str__(self) -> str:
        return text_table(OPERATION_HEADERS, [self.cells()])

    def _repr_html_(self) -> str:
        return html_table(OPERATION_HEADERS, [self.cells()])


OPERATION_HEADERS = ("operation", "changed", "status", "stderr")


@dataclass(frozen=True)
class HostDeploy(TableView):
    """One host's run: each operation, whether it changed, the errors, and the smoke result."""

    host: str
    ok: bool
    operations: tuple[OperationResult, ...]
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    smoke: SmokeResult | None

    @property
    def changed(self) -> list[str]:
        return [op.name for op in self.operations if op.changed]

    @property
    def rolled_back(self) -> bool:
        return any(e.startswith("rolled back") for e in self.errors)

    @property
    def outcome(self) -> str:
        if self.ok:
            return "updated" if self.changed else "unchanged"
        return "rolled back" if self.rolled_back else "failed"

    def cells(self) -> list[Any]:
        tps = self.smoke.decode_tokens_per_s if self.smoke else None
        error = self.errors[-1] if self.errors else ""
        return [self.host, self.outcome, len(self.changed), tps, error[:160]]

    def _caption(self) -> str:
        return f"{self.host}: {self.outcome}, {len(self.changed)} change(s)" + "".join(
            f"; {e}" for e in (*self.errors, *self.warnings)
        )

    def __str__(self) -> str:
        return self._caption() + "\n" + text_table(OPERATION_HEADERS, [op.cells() for op in self.operations])

    def _repr_html_(self) -> str:
        return html_table(OPERATION_HEADERS, [op.cells() for op in self.operations], caption=self._caption())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostDeploy:
        smoke = data.get("smoke")
        return cls(
            host=data["host"],
            ok=data["ok"],
            operations=tuple(
                OperationResult(o["name"], bool(o["changed"]), o.get("success"), tuple(o.get("stderr") or ()))
                for o in data["operations"]
            ),
            errors=tuple(data.get("errors") or ()),
            warnings=tuple(data.get("warnings") or ()),
            smoke=smoke_from_json(smoke) if smoke else None,
        )


DEPLOY_HEADERS = ("host", "outcome", "changes", "tokens/s", "error")


@dataclass(frozen=True)
class FleetDeploy(TableView):
    hosts: tuple[HostDeploy, ...]
    dry: bool
    seconds: float
    log: str = field(repr=False, default="")

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    @property
    def changes(self) -> int:
        """Operations that changed something (that would, in a dry run), over all hosts."""
        return sum(len(h.changed) for h in self.hosts)

    def __getitem__(self, name: str) -> HostDeploy:
        return next(h for h in self.hosts if h.host == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry": self.dry,
            "seconds": self.seconds,
            "changes": self.changes,
            "hosts": [
                {**asdict(h), "smoke": h.smoke.to_json() if h.smoke else None, "outcome": h.outcome} for h in self.hosts
            ],
        }

    def __str__(self) -> str:
        return text_table(DEPLOY_HEADERS, [h.cells() for h in self.hosts])

    def _repr_html_(self) -> str:
        what = "Dry run" if self.dry else "Deploy"
        caption = f"{what} of {len(self.hosts)} host(s): {self.changes} change(s), {self.seconds:.1f} s"
        return html_table(DEPLOY_HEADERS, [h.cells() for h in self.hosts], caption=caption)


def smoke_from_json(data: dict[str, Any]) -> SmokeResult:
    steps = [Step(**s) for s in data.get("steps", [])]
    known = set(SmokeResult.__dataclass_fields__) - {"steps"}
    return SmokeResult(steps=steps, **{k: v for k, v in data.items() if k in known})


# -- smoke and verify -----------------------------------------------------------------


@dataclass(frozen=True)
class FleetSmoke(TableView):
    results: tuple[SmokeResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "results": [r.to_json() for r in self.results]}

    def _rows(self) -> tuple[list[str], list[list[Any]]]:
        names = sorted({s.name for r in self.results for s in r.steps}, key=_check_order)
        rows = [
            [r.host, *({s.name: s.status for s in r.steps}.get(n) for n in names), r.decode_tokens_per_s]
            for r in self.results
        ]
        return ["host", *names, "tokens/s"], rows

    def __str__(self) -> str:
        return text_table(*self._rows())

    def _repr_html_(self) -> str:
        headers, rows = self._rows()
        return html_table(headers, rows, caption=f"Smoke test of {len(self.results)} endpoint(s)")


def _check_order(name: str) -> tuple[int, str]:
    order = ("tunnel", "health", "auth", "models", "chat", "stream")
    return (order.index(name) if name in order else len(order), name)


@dataclass(frozen=True)
class CheckResult(TableView):
    host: str
    check: str
    passed: bool
    message: str = ""

    def cells(self) -> list[Any]:
        return [self.host, self.check.removeprefix("test_"), _verdict(self), self.message[:200]]

    def __str__(self) -> str:
        return text_table(CHECK_HEADERS, [self.cells()])

    def _repr_html_(self) -> str:
        return html_table(CHECK_HEADERS, [self.cells()])


CHECK_HEADERS = ("host", "check", "verdict", "message")


@dataclass(frozen=True)
class FleetVerify(TableView):
    """The verify suite's outcome, host by check (from its JUnit XML, one case per host and check)."""

    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def hosts(self) -> list[str]:
        return list(dict.fromkeys(c.host for c in self.checks))

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def _rows(self) -> tuple[list[str], list[list[Any]]]:
        names = list(dict.fromkeys(c.check for c in self.checks))
        by = {(c.host, c.check): c for c in self.checks}
        rows = [[h, *(_verdict(by.get((h, n))) for n in names)] for h in self.hosts]
        return ["host", *(n.removeprefix("test_") for n in names)], rows

    def __str__(self) -> str:
        return text_table(*self._rows())

    def _repr_html_(self) -> str:
        headers, rows = self._rows()
        return html_table(headers, rows, caption=f"Verify: {len(self.failures())} failure(s)")


def _verdict(check: CheckResult | None) -> str | None:
    return None if check is None else "pass" if check.passed else "fail"
