"""Turn smoke results into tables people read: a terminal table and a Markdown fleet report.

``lemfleet smoke --json OUT`` writes the results; ``lemfleet report OUT`` renders them as the
Markdown a pipeline posts to a pull request or a chat channel: per host the backend, the model,
decode tokens/s, time to first token and the status.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lemfleet.smoke_result import CHECKS, SmokeResult

HELP = "render a smoke JSON file as a Markdown table per host"


def read_results(path: str | Path) -> list[SmokeResult]:
    """Load smoke results; errors name the file.

    Accepts what ``lemfleet smoke --json`` writes (``{"results": [...]}``), one host's result
    (the deploy's smoke step writes ``out/smoke/<host>.json``), or a directory of those.
    """
    source = Path(path)
    if source.is_dir():
        files = sorted(source.glob("*.json"))
        if not files:
            raise ValueError(f"{source} holds no .json smoke results")
        return [result for file in files for result in read_results(file)]
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read {source}: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not JSON: {err}") from err
    if isinstance(document, dict) and isinstance(document.get("results"), list):
        return [SmokeResult.from_json(entry) for entry in document["results"]]
    if isinstance(document, dict) and {"host", "url", "steps"} <= document.keys():
        return [SmokeResult.from_json(document)]
    raise ValueError(f"{source} holds no smoke results; write it with `lemfleet smoke --json`")


def results_document(results: Sequence[SmokeResult], **extra: Any) -> dict[str, Any]:
    """The JSON document ``lemfleet smoke --json`` writes (and :func:`read_results` reads)."""
    return {"ok": all(r.ok for r in results), "results": [r.to_json() for r in results], **extra}


def model_name(result: SmokeResult) -> str:
    if result.model:
        return result.model
    if result.model_path:
        return Path(result.model_path).name
    return "-"


def status_text(result: SmokeResult) -> str:
    if result.ok:
        return "pass"
    failed = result.failures()
    return "FAIL: " + "; ".join(f"{step.name}: {step.message}" for step in failed)


def _number(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _cell(text: str) -> str:
    """Keep a value inside its Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Sequence[SmokeResult]) -> str:
    passed = sum(1 for r in results if r.ok)
    lines = [
        "## lemfleet smoke report",
        "",
        f"{passed} of {len(results)} hosts passed.",
        "",
        "| Host | Backend | Model | Tokens/s | Time to first token | Status |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for r in results:
        status = "pass" if r.ok else f"**{status_text(r)}**"
        cells = [
            r.host,
            r.backend or "-",
            model_name(r),
            _number(r.decode_tokens_per_s),
            _number(r.time_to_first_token_s, " s", 3),
            status,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_table(results: Sequence[SmokeResult]) -> str:
    """A plain-text table for terminals, then one line per failed check."""
    header = ["HOST", *(name.upper() for name in CHECKS), "TOKENS/S", "TTFT", "STATUS"]
    rows = [header]
    for r in results:
        by_name = {step.name: step.status for step in r.steps}
        rows.append(
            [
                r.host,
                *(by_name.get(name, "-") for name in CHECKS),
                _number(r.decode_tokens_per_s),
                _number(r.time_to_first_token_s, "s", 3),
                "pass" if r.ok else "FAIL",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for r in results:
        out.extend(f"{r.host}: {step.name} failed: {step.message}" for step in r.failures())
    return "\n".join(out) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "json_file",
        metavar="JSON",
        help="file from `lemfleet smoke --json`, or the deploy's out/smoke/ directory",
    )
    parser.add_argument("--out", metavar="FILE", help="write the Markdown here instead of stdout")


def run(args: argparse.Namespace) -> int:
    markdown = render_markdown(read_results(args.json_file))
    if args.out:
        Path(args.out).write_text(markdown, encoding="utf-8")
    else:
        print(markdown, end="")
    return 0
