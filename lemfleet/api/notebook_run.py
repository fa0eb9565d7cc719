"""Run a notebook headless, with parameters, and keep the executed notebook and an HTML export as the record.

    python -m lemfleet.api.notebook_run notebooks/what-if.ipynb
    python -m lemfleet.api.notebook_run notebooks/fleet.ipynb -p inventory=inventories/testbed.py \\
        -p 'limit=["tb1", "tb2"]' --rerun rollout

Parameters work as papermill's do: the notebook's cell tagged ``parameters`` holds the defaults, and a
cell tagged ``injected-parameters`` is put right after it with the values given. A value is read as
JSON where it parses (numbers, lists, objects, true/false/null) and as a string otherwise.
``--rerun TAG`` runs the cell tagged TAG a second time right after the first, as its own cell in the
record (the fleet notebook proves that a second rollout changes nothing this way).

Parameters never hold secrets, because the executed notebook is a record meant to be shared: a name
or a key inside a value that looks like a secret (key, token, password, ...) is refused unless it
names where the secret is read from (``*_env``, ``*_file``). Keys and tokens come from the
environment or the inventory's vault.

The kernel starts in the notebook's folder, as Jupyter starts it. Needs the ``notebook`` extra,
imported inside the functions so that ``--help`` works without it.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT = Path("out/notebooks")
SECRET_NAME = re.compile(r"key|token|passw|secret|passphrase|credential|vault", re.IGNORECASE)
ALLOWED_SUFFIX = ("_env", "_file", "_var")


class NotebookParameterError(ValueError):
    """A parameter cannot be given to the notebook; nothing was run."""


def secret_names(name: str, value: Any) -> list[str]:
    """Names (the parameter's, or keys inside its value) that look like they hold a secret."""
    found = [name] if SECRET_NAME.search(name) and not name.endswith(ALLOWED_SUFFIX) else []
    if isinstance(value, Mapping):
        for key, inner in value.items():
            found += secret_names(f"{name}[{key!r}]" if name else str(key), inner) if isinstance(key, str) else []
    return found


def check_parameters(parameters: Mapping[str, Any]) -> None:
    for name in parameters:
        if not name.isidentifier():
            raise NotebookParameterError(f"parameter {name!r} is not valid; accepted: a Python identifier")
    bad = [found for name, value in parameters.items() for found in secret_names(name, value)]
    if bad:
        raise NotebookParameterError(
            f"parameters {bad} look like secrets, and the executed notebook is a record to share; accepted: "
            "read keys and tokens in the notebook from the environment (a *_env parameter names the variable) "
            "or from the inventory's vault"
        )


def parse_parameter(item: str) -> tuple[str, Any]:
    name, sep, text = item.partition("=")
    if not sep or not name:
        raise NotebookParameterError(f"parameter {item!r} is not valid; accepted: NAME=VALUE")
    try:
        return name, json.loads(text)
    except json.JSONDecodeError:
        return name, text


def inject(notebook: Any, parameters: Mapping[str, Any]) -> None:
    """Put a cell tagged ``injected-parameters`` after the ``parameters`` cell (or first)."""
    import nbformat

    if not parameters:
        return
    check_parameters(parameters)
    source = "# Parameters given to this run\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    notebook.cells.insert(tagged[0] + 1 if tagged else 0, cell)


@dataclass
class NotebookRun:
    """An executed notebook: where its record and HTML export are, and how long it ran."""

    notebook: Any  # nbformat.NotebookNode
    executed: Path
    html: Path
    seconds: float
    error: str | None = None

    def cells(self, tag: str) -> list[Any]:
        return [c for c in self.notebook.cells if tag in c.get("metadata", {}).get("tags", [])]

    def errors(self) -> list[str]:
        """``ename: evalue`` of every error output (none in a green run)."""
        return [
            f"{o.get('ename')}: {o.get('evalue')}"
            for c in self.notebook.cells
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]


def run_notebook(
    path: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    out: str | Path = OUT,
    rerun: Iterable[str] = (),
    timeout: int = 1800,
    kernel: str = "python3",
) -> NotebookRun:
    """Execute the notebook; the executed copy and its HTML export go to ``out`` even when a cell fails."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    source = Path(path)
    notebook = nbformat.read(source, as_version=4)
    inject(notebook, dict(parameters or {}))
    for tag in rerun:
        for index in reversed([i for i, c in enumerate(notebook.cells) if tag in c.metadata.get("tags", [])]):
            again = copy.deepcopy(notebook.cells[index])
            again.metadata["tags"] = ["rerun", f"rerun-{tag}"]
            again.id = f"rerun-{again.get('id', index)}"[:64]  # cell ids are unique in a notebook
            again.source = f"# The {tag} cell again: a second run must change nothing.\n{again.source}"
            notebook.cells.insert(index + 1, again)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(source.parent.resolve())}}
    )
    started = time.monotonic()
    error = None
    try:
        client.execute()
    except CellExecutionError as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        error = lines[-1] if lines else type(err).__name__
    seconds = round(time.monotonic() - started, 1)
    notebook.metadata.setdefault("lemfleet", {})["run"] = {"seconds": seconds, "parameters": sorted(parameters or {})}
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    executed = target / source.name
    nbformat.write(notebook, executed)
    html_path = executed.with_suffix(".html")
    body, _ = HTMLExporter().from_notebook_node(notebook)
    html_path.write_text(body, encoding="utf-8")
    return NotebookRun(notebook, executed, html_path, seconds, error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lemfleet.api.notebook_run", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="the .ipynb to run")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", default=str(OUT), help=f"folder for the executed notebook and HTML (default {OUT})")
    parser.add_argument("--rerun", action="append", default=[], metavar="TAG", help="run the cell tagged TAG twice")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = parser.parse_args(argv)
    try:
        parameters = dict(parse_parameter(item) for item in args.parameter)
        run = run_notebook(args.notebook, parameters, out=args.out, rerun=args.rerun, timeout=args.timeout)
    except NotebookParameterError as err:
        print(f"notebook_run: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.notebook}: {run.seconds:.1f} s; record {run.executed}, HTML {run.html}")
    if run.error or run.errors():
        print(f"notebook_run: a cell failed: {run.error or run.errors()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
