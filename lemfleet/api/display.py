"""Plain-text and HTML tables for the API's results (a notebook shows the HTML, a terminal the text).

Every cell is escaped: host names, messages and reasons come from inventories and hosts.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

PASS_STYLE = "background:#e6f4ea;color:#137333"
FAIL_STYLE = "background:#fce8e6;color:#a50e0e"
WARN_STYLE = "background:#fef7e0;color:#b06000"


class TableView:
    """IPython's plain-text view of a result (``_repr_pretty_``) is its table, not the dataclass repr.

    A notebook shows ``_repr_html_``; where HTML is not rendered (a terminal IPython, a text
    export of the notebook) the same table comes out as text.
    """

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # IPython takes the first class in the MRO that defines _repr_pretty_ or __repr__, and
        # @dataclass writes __repr__ into the subclass itself: so each subclass gets its own copy.
        super().__init_subclass__(**kwargs)
        cls._repr_pretty_ = TableView._repr_pretty_  # type: ignore[method-assign]


def cell_style(value: Any) -> str:
    text = str(value).lower()
    if text in ("pass", "passed", "ok", "unchanged", "updated"):
        return PASS_STYLE
    if text in ("fail", "failed", "error", "rolled back", "unreachable"):
        return FAIL_STYLE
    if text in ("skipped", "warning", "not reached"):
        return WARN_STYLE
    return ""


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    caption: str = "",
    details: Sequence[str] | None = None,
) -> str:
    """An HTML table; ``details[i]``, when given, is folded under row ``i`` (e.g. a plan's reasons)."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption style='text-align:left'>{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead><tbody>")
    for index, row in enumerate(rows):
        cells = []
        for value in row:
            style = cell_style(value)
            attr = f" style='{style}'" if style else ""
            cells.append(f"<td{attr}>{html.escape(_text(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
        if details and details[index]:
            out.append(
                f"<tr><td colspan='{len(headers)}'><details><summary>why</summary>"
                f"<pre>{html.escape(details[index])}</pre></details></td></tr>"
            )
    out.append("</tbody></table>")
    return "".join(out)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table for terminals and ``repr``."""
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
