"""fleet.ipynb executed headless against tb1 and tb2: plan, rollout (twice), verify, smoke, load, chart, report.

The run gives the fleet one change (``server_ctx_size``), so that the first rollout has work to show
and the second, the same cell run again, must report 0 changes. The fleet is put back afterwards for
the other test-bed tests. The executed notebook and its HTML export stay in out/notebooks/.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lemfleet import api
from lemfleet.api.notebook_run import NotebookRun, run_notebook
from tests.testbed.conftest import PROJECT

INVENTORY = PROJECT / "inventories" / "testbed.py"
OUT = PROJECT / "out" / "notebooks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDGET = "application/vnd.jupyter.widget-view+json"


def outputs(run: NotebookRun, tag: str, kind: str) -> str:
    [cell] = run.cells(tag)
    return "".join(o.get("data", {}).get(kind, "") + o.get("text", "") for o in cell.outputs)


def progress_record(run: NotebookRun, tag: str) -> str:
    """The cell's printed lines, and the saved state of the progress widgets it displayed."""
    [cell] = run.cells(tag)
    text = "".join(o.get("text", "") for o in cell.outputs)
    widgets = [o for o in cell.outputs if WIDGET in o.get("data", {})]
    if widgets:
        text += json.dumps(run.notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"])
    return text


@pytest.fixture(scope="module")
def fleet_run(fleet, tiny_model: Path) -> Iterator[tuple[list[str], NotebookRun]]:
    names = [rec.name for rec in fleet]
    model = {"model_source": "local", "model_path": str(tiny_model)}
    parameters: dict[str, Any] = {
        "inventory": "inventories/testbed.py",
        "limit": names,
        "batches": "1,100%",
        "settings": {**model, "server_ctx_size": 2048},
        "load_requests": 6,
    }
    try:
        yield names, run_notebook(PROJECT / "notebooks" / "fleet.ipynb", parameters, out=OUT, rerun=["rollout"])
    finally:
        back = api.deploy(api.Fleet.from_inventory(INVENTORY, data=model), limit=names)
        assert back.ok, back.log[-3000:]


def test_the_fleet_notebook_runs_green_with_every_host_in_every_table(fleet_run) -> None:
    names, run = fleet_run
    assert run.error is None and run.errors() == [], run.errors() or run.error
    assert run.executed == OUT / "fleet.ipynb" and run.html.is_file()
    for tag in ("plan", "rollout", "rerun-rollout", "verify", "smoke", "load"):
        table = outputs(run, tag, "text/html")
        assert "<table>" in table, tag
        for name in names:
            assert f"<td>{name}</td>" in table, (tag, name)
    assert "<details>" in outputs(run, "plan", "text/html")  # the reasons, folded under each row
    verify = outputs(run, "verify", "text/html")
    assert "Verify: 0 failure(s)" in verify and ">fail<" not in verify
    load = outputs(run, "load", "text/plain")
    assert re.search(r"p50 s\s+p90 s\s+p99 s\s+max s", load.splitlines()[0], re.IGNORECASE), load
    report = outputs(run, "report", "text/markdown")
    assert f"{len(names)} of {len(names)} hosts passed." in report
    assert all(f"| {name} |" in report for name in names)
    html = run.html.read_text()
    assert all(name in html for name in names) and "data:image/png;base64" in html


def test_the_rollout_changes_the_fleet_once_and_its_second_run_changes_nothing(fleet_run) -> None:
    names, run = fleet_run
    first = outputs(run, "rollout", "text/plain")
    match = re.search(r": completed, (\d+) change\(s\)", first)
    assert match and int(match.group(1)) >= len(names), first[-2000:]
    for name in names:  # the live progress, per host: tqdm's widgets (their state is saved) or plain lines
        assert name in progress_record(run, "rollout"), name
    again = outputs(run, "rerun-rollout", "text/plain")
    assert ": completed, 0 change(s)" in again, again[-2000:]


def test_the_chart_is_a_non_empty_png(fleet_run) -> None:
    _, run = fleet_run
    [cell] = run.cells("chart")
    [png] = [base64.b64decode(o["data"]["image/png"]) for o in cell.outputs if "image/png" in o.get("data", {})]
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    assert (PROJECT / "out" / "notebooks" / "fleet-tokens.png").read_bytes() == png
