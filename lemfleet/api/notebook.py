"""Notebook helpers: live progress per host, a tokens/s chart, and plans compared side by side.

Needs the ``notebook`` extra (``pip install 'lemfleet[notebook]'``: tqdm, matplotlib, ipywidgets).
Nothing else in lemfleet imports this module, so ``from lemfleet import api`` works without it.

- :class:`Progress` is an ``on_event`` for :func:`lemfleet.api.deploy` and :func:`lemfleet.api.rollout`:
  in a Jupyter kernel with ipywidgets, one tqdm bar per host (operations done, changed, failed);
  anywhere else one plain line per event, so a headless run's record still shows the run.
- :func:`tokens_chart` draws decode tokens/s per host as a PNG (matplotlib's Agg canvas, no GUI
  backend and no pyplot state), which a notebook shows inline and a file can hold.
- :func:`compare` lays several plans of the same hosts side by side (the what-if notebook).
"""

from __future__ import annotations

import importlib.util
import io
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lemfleet.api.display import TableView, html_table, text_table
from lemfleet.api.results import Event, FleetDeploy, FleetPlan, FleetSmoke, HostPlan
from lemfleet.smoke_result import SmokeResult

GIB = 1024**3
ROLLOUT_KINDS = ("rollout_started", "batch_started", "batch_done", "rollout_done", "run_stopped")


def in_notebook() -> bool:
    """True in a Jupyter kernel (ipykernel's shell) where ipywidgets can draw tqdm's bars."""
    if "IPython" not in sys.modules or importlib.util.find_spec("ipywidgets") is None:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


@dataclass
class Progress:
    """Live progress of a deploy or rollout, per host; pass it as ``on_event``.

    ``bars=None`` picks tqdm's notebook bars in a Jupyter kernel and plain lines elsewhere.
    The counts stay readable afterwards: ``done``, ``changed`` and ``failed`` per host.
    """

    bars: bool | None = None
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    done: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    _bars: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.bars is None:
            self.bars = in_notebook()

    def __call__(self, event: Event) -> None:
        host = event.host
        if event.kind in ("operation_done", "operation_failed") and host:
            self.done[host] += 1
            self.changed[host] += bool(event.changed)
            self.failed[host] += event.kind == "operation_failed"
        if not self.bars:
            self._line(event)
            return
        if event.kind in ROLLOUT_KINDS or event.kind == "setup_failed":
            print(event.message or event.kind, file=self.out)
        elif host and event.kind == "host_connected":
            self._bar(host)
        elif host and event.kind in ("operation_started", "operation_done", "operation_failed"):
            bar = self._bar(host)
            if event.kind == "operation_started":
                bar.set_description_str(f"{host}: {event.operation}"[:60])
            else:
                bar.update(1)
                bar.set_postfix(changed=self.changed[host], failed=self.failed[host])
        elif host and event.kind in ("host_unreachable", "host_message"):
            self._bar(host).write(f"[{host}] {event.level or 'error'}: {event.message}")
        elif event.kind == "result":
            self.close()

    def _bar(self, host: str) -> Any:
        if host not in self._bars:
            from tqdm.notebook import tqdm

            self._bars[host] = tqdm(desc=host, unit="op")
        return self._bars[host]

    def _line(self, event: Event) -> None:
        if event.kind in ("operation_done", "operation_failed"):
            mark = "failed" if event.kind == "operation_failed" else ("changed" if event.changed else "ok")
            print(f"[{event.host}] {event.operation}: {mark}", file=self.out)
        elif event.kind in ("host_connected", "host_unreachable", "host_message"):
            print(f"[{event.host}] {event.level or event.kind}: {event.message or 'connected'}", file=self.out)
        elif event.kind in ROLLOUT_KINDS or event.kind == "setup_failed":
            print(event.message or event.kind, file=self.out)
        elif event.kind == "result":
            for host in self.done:
                print(f"[{host}] {self.done[host]} operation(s), {self.changed[host]} changed", file=self.out)

    def close(self) -> None:
        """End the bars, and print each host's counts (a text view of the record shows them too)."""
        for host, bar in self._bars.items():
            bar.set_description_str(f"{host}: {'failed' if self.failed[host] else 'done'}")
            bar.close()
            print(f"[{host}] {self.done[host]} operation(s), {self.changed[host]} changed", file=self.out)
        self._bars.clear()


# -- chart ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """A PNG a notebook shows inline (``_repr_png_``) and :meth:`save` writes to a file."""

    png: bytes = field(repr=False)
    title: str = ""

    def _repr_png_(self) -> bytes:
        return self.png

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.png)
        return target


def _smoke_results(results: FleetSmoke | FleetDeploy | Iterable[SmokeResult]) -> list[SmokeResult]:
    if isinstance(results, FleetSmoke):
        return list(results.results)
    if isinstance(results, FleetDeploy):
        return [h.smoke for h in results.hosts if h.smoke is not None]
    return list(results)


def tokens_chart(
    results: FleetSmoke | FleetDeploy | Iterable[SmokeResult], *, title: str = "Decode tokens/s per host"
) -> Chart:
    """A bar per host of its decode tokens/s (from its smoke result); a host without a figure shows 0, marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    smoked = _smoke_results(results)
    if not smoked:
        raise ValueError("no smoke result to chart: smoke the fleet first (api.smoke)")
    hosts = [r.host for r in smoked]
    values = [r.decode_tokens_per_s or 0.0 for r in smoked]
    figure = Figure(figsize=(max(4.0, 1.2 * len(hosts) + 2), 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bars = axes.bar(hosts, values, color=["#1a73e8" if r.ok else "#d93025" for r in smoked])
    labels = [f"{v:.1f}" if r.decode_tokens_per_s else "no figure" for v, r in zip(values, smoked, strict=True)]
    axes.bar_label(bars, labels=labels, padding=2)
    axes.set_ylabel("tokens/s")
    axes.set_title(title)
    axes.margins(y=0.2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return Chart(buffer.getvalue(), title)


# -- plans side by side -----------------------------------------------------------------------


def plan_summary(plan: HostPlan) -> str:
    """One cell of a comparison: backend, targets, quant (with auto's budget) and -ngl, or the error."""
    if not plan.ok:
        error = "; ".join(plan.errors)
        return "error: " + (error if len(error) <= 140 else error[:139] + "…")  # in full under "why"
    row = plan.row
    targets = ",".join([*row.get("gpu_targets", []), *(f"sm {a}" for a in row.get("cuda_architectures", []))])
    quant = row.get("quant") or {}
    value = str(quant.get("value"))
    if value == "auto":
        budget = quant.get("budget_bytes")
        value += f" (budget {budget / GIB:.1f} GiB)" if budget else " (budget 0: memory not reported)"
    devices = sum(1 for g in row.get("gpus") or [] if g.get("chosen"))
    parts = [str(row.get("backend")), f"{devices} GPU(s)" if devices else "", targets, value]
    return " · ".join(p for p in parts if p) + f" · -ngl {row.get('n_gpu_layers')}"


@dataclass(frozen=True)
class PlanComparison(TableView):
    """The same hosts planned under several settings: one row per host, one column per variant."""

    variants: Mapping[str, FleetPlan]
    notes: Mapping[str, str] = field(default_factory=dict)  # host -> where its facts come from

    def _hosts(self) -> list[str]:
        return list(dict.fromkeys(h.host for plan in self.variants.values() for h in plan.hosts))

    def _rows(self) -> tuple[list[str], list[list[Any]]]:
        headers = ["host", "facts", *self.variants]
        by = {(name, h.host): h for name, plan in self.variants.items() for h in plan.hosts}
        rows = [
            [host, self.notes.get(host, ""), *(_cell(by.get((name, host))) for name in self.variants)]
            for host in self._hosts()
        ]
        return headers, rows

    def to_json(self) -> dict[str, Any]:
        return {
            "notes": dict(self.notes),
            "variants": {name: plan.to_json() for name, plan in self.variants.items()},
        }

    def __str__(self) -> str:
        return text_table(*self._rows())

    def _repr_html_(self) -> str:
        headers, rows = self._rows()
        details = [
            "\n".join(
                f"{name}: {key}: {value}"
                for name, plan in self.variants.items()
                for h in plan.hosts
                if h.host == host
                for key, value in (h.reasons or {"error": "; ".join(h.errors)}).items()
            )
            for host in self._hosts()
        ]
        caption = f"{len(rows)} host(s) under {len(self.variants)} setting(s)"
        return html_table(headers, rows, caption=caption, details=details)


def _cell(plan: HostPlan | None) -> str:
    return "-" if plan is None else plan_summary(plan)


def compare(variants: Mapping[str, FleetPlan], notes: Mapping[str, str] | None = None) -> PlanComparison:
    """Plans of the same hosts under different settings, side by side; ``notes`` say where facts come from."""
    if not variants:
        raise ValueError("nothing to compare: give at least one plan")
    return PlanComparison(dict(variants), dict(notes or {}))


def plan_from_rows(rows: Iterable[Mapping[str, Any]]) -> FleetPlan:
    """A :class:`FleetPlan` from plan rows (``lemfleet.plan_fleet.plan_row``, ``lemfleet plan --json``)."""
    return FleetPlan(tuple(HostPlan(r["host"], bool(r["ok"]), tuple(r["errors"]), dict(r)) for r in rows))
