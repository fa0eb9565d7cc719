"""what-if.ipynb executed headless with no host, and the runner's reruns and failure record.

Executing a notebook starts a Jupyter kernel (ZeroMQ over loopback TCP), so these live here rather than in
the unit tier. Each run keeps its executed notebook and HTML export under out/notebooks/, the run's record.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import nbformat

from lemfleet.api.notebook_run import run_notebook
from tests.unit.test_notebooks import ROOT, parameters_of

OUT = ROOT / "out" / "notebooks"
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def html_outputs(cell: Any) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.get("outputs", []))


def test_what_if_plans_recorded_hardware_with_no_host() -> None:
    run = run_notebook(ROOT / "notebooks" / "what-if.ipynb", out=OUT, timeout=300)
    assert run.error is None and run.errors() == [], run.errors() or run.error
    assert run.executed == OUT / "what-if.ipynb" and run.html == OUT / "what-if.html"
    assert nbformat.read(run.executed, as_version=4).metadata["lemfleet"]["run"]["seconds"] == run.seconds
    parameters = parameters_of(ROOT / "notebooks" / "what-if.ipynb")
    scenarios, side_by_side = parameters["scenarios"], parameters["compare_quant"]

    # Every host in every table.
    for tag, hosts in (("quant-auto", side_by_side), ("quant-compare", side_by_side), ("compare", scenarios)):
        [cell] = run.cells(tag)
        table = html_outputs(cell)
        assert table.startswith("<table>"), tag
        for host in hosts:
            assert f"<td>{host}</td>" in table, (tag, host)
    [plan] = run.cells("plan")
    assert all(f"<td>{host}</td>" in html_outputs(plan) for host in scenarios)

    # The MI300X, 7900 XTX and 4090 side by side with model_quant=auto: each its backend, targets and budget.
    [compared] = run.cells("quant-compare")
    rows = {
        cells[0]: cells[1:]
        for cells in (
            [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", html_outputs(compared))
        )
        if cells
    }
    assert rows["mi300x"][1] == "hip · 1 GPU(s) · gfx942 · auto (budget 191.7 GiB) · -ngl 999"
    assert rows["rx7900xtx"][1] == "hip · 1 GPU(s) · gfx1100 · auto (budget 24.0 GiB) · -ngl 999"
    assert rows["rtx4090"][1] == "cuda · 1 GPU(s) · sm 89 · auto (budget 24.0 GiB) · -ngl 999"
    # Hand-built facts say so; recorded ones say where they come from.
    assert rows["rtx4090"][0].startswith("HAND-BUILT: ") and rows["mi300x"][0].startswith("recorded: ")

    # A variant that cannot be planned shows its error in the cell, and the full reasons fold under the row.
    [everything] = run.cells("compare")
    table = html_outputs(everything)
    assert "error: 1 GPU(s) detected but serving on the CPU" in table and "<details>" in table
    assert "cpu · Q4_K_M · -ngl 0" in html.unescape(table)  # Debian 12 with gpu_allow_cpu_fallback
    text = run.html.read_text()
    assert all(host in text for host in scenarios) and "HAND-BUILT" in text


def test_the_runner_injects_reruns_and_keeps_the_record_of_a_failed_run(tmp_path: Path) -> None:
    cells = [
        nbformat.v4.new_code_cell("count = 0\nlimit = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("count += 1\nprint(f'run {count} with {limit}')", metadata={"tags": ["rollout"]}),
        nbformat.v4.new_code_cell("raise RuntimeError('the fleet is on fire')"),
        nbformat.v4.new_code_cell("print('not reached')"),
    ]
    source = tmp_path / "book.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": KERNEL}), source)
    run = run_notebook(source, {"limit": ["tb1"]}, out=tmp_path / "out", rerun=["rollout"], timeout=120)
    texts = [[o.get("text", "") for o in c.outputs] for c in run.notebook.cells]
    assert texts[2:4] == [["run 1 with ['tb1']\n"], ["run 2 with ['tb1']\n"]]
    assert run.cells("rerun-rollout")[0].source.startswith("# The rollout cell again")
    assert run.errors() == ["RuntimeError: the fleet is on fire"]
    assert run.error and "the fleet is on fire" in run.error
    assert texts[-1] == []  # execution stopped at the error
    nbformat.validate(nbformat.read(run.executed, as_version=4))  # unique cell ids
    assert "the fleet is on fire" in run.html.read_text()
