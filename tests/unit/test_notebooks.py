"""The notebooks as committed (no outputs, no secrets), and how the runner injects parameters.

Executing a notebook starts a Jupyter kernel, which talks over loopback TCP: what-if.ipynb run headless
with no host is in tests/integration/test_notebooks_run.py, fleet.ipynb against test-bed hosts in
tests/testbed/test_notebooks.py.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import nbformat
import pytest

from lemfleet.api.notebook_run import NotebookParameterError, check_parameters, inject, parse_parameter

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_both_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == ["fleet.ipynb", "what-if.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {index} has outputs"
    assert "widgets" not in notebook.metadata and "lemfleet" not in notebook.metadata


def parameters_of(path: Path) -> dict[str, Any]:
    notebook = nbformat.read(path, as_version=4)
    [cell] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    tree = ast.parse(cell.source)
    assert all(isinstance(node, ast.Assign) for node in tree.body), "the parameters cell only assigns values"
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_are_literals_and_hold_no_secrets(path: Path) -> None:
    parameters = parameters_of(path)
    assert parameters
    check_parameters(parameters)


def test_parameters_that_look_like_secrets_are_refused() -> None:
    with pytest.raises(NotebookParameterError, match=r"parameters \['api_key'\] look like secrets"):
        check_parameters({"api_key": "sk-live"})
    with pytest.raises(NotebookParameterError, match=r"settings\['server_api_keys'\]"):
        check_parameters({"settings": {"model_quant": "auto", "server_api_keys": ["k"]}})
    with pytest.raises(NotebookParameterError, match="accepted: a Python identifier"):
        check_parameters({"not-a-name": 1})
    check_parameters({"api_key_env": "LEMFLEET_API_KEY", "settings": {"model_quant": "auto"}})
    assert parse_parameter('limit=["tb1", "tb2"]') == ("limit", ["tb1", "tb2"])
    assert parse_parameter("inventory=inventories/testbed.py") == ("inventory", "inventories/testbed.py")
    with pytest.raises(NotebookParameterError, match="accepted: NAME=VALUE"):
        parse_parameter("limit")


def test_parameters_go_in_a_cell_right_after_the_parameters_cell() -> None:
    notebook = nbformat.read(ROOT / "notebooks" / "fleet.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in notebook.cells]
    at = next(i for i, t in enumerate(tags) if "parameters" in t)
    inject(notebook, {"limit": ["tb1"], "batches": "1,100%"})
    cell = notebook.cells[at + 1]
    assert cell.metadata["tags"] == ["injected-parameters"]
    assert "limit = ['tb1']\nbatches = '1,100%'\n" in cell.source
