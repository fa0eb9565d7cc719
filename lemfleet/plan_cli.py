"""``lemfleet plan``: the plan of every host in an inventory, before anything is changed.

    lemfleet plan INVENTORY.py [--limit HOST] [--data KEY=VALUE] [--group-data DIR] [--json OUT|-]

The inventory is read with pyinfra's own loader (``--data`` and ``group_data/`` apply as they do
for ``pyinfra INVENTORY.py deploy.py``), every host's settings are checked first (a bad one exits
2 and no host is contacted), then the hosts are reached in parallel and probed with the deploy's
own facts, which only read. Each host's plan is computed as the deploy computes it, with the
model taken from its settings rather than downloaded (see :mod:`lemfleet.plan_fleet`).
``--limit`` takes a group name or a host glob as pyinfra's does, but one that matches nothing
is an error here. ``--connect-timeout`` is pyinfra's ``CONNECT_TIMEOUT``; it also bounds a host
that accepts the TCP connection but never answers SSH.

People get a table (host, GPUs, backend, build targets, quant, server flags, warnings) followed
by each host's reasons; ``--json OUT`` also writes the rows for CI, ``--json -`` prints only the
JSON. Exit status: 0 when every host has a plan, 1 when any host could not be reached or its plan
fails (e.g. a GPU host that would end on the CPU without ``gpu_allow_cpu_fallback``), 2 for an
unreadable inventory or an invalid setting.

The JSON is a list with one object per host, in inventory order, always with these keys:

- ``host`` (the inventory name), ``ok`` (bool), ``errors`` (list of strings, empty when ok);
- ``hostname``, ``os`` ("debian 12 (bookworm)"), ``arch``, ``cpu_physical_cores``,
  ``mem_total_bytes``: from the facts, null when the host was not reached;
- ``gpus``: list of ``{index, vendor, name, vram_bytes, gfx_target, compute_capability,
  pci_slot, integrated, driver_ok, chosen}``;
- ``model``: ``{source, alias, file, size_bytes}`` (``size_bytes`` is 0 where unknown before
  the deploy resolves it) or null;
- ``quant``: ``{value, from, budget_bytes, reserve_bytes, note}``; ``value`` is "auto" for
  ``model_quant=auto``, whose memory budget and context reserve are given; null on error;
- the keys of ``HostPlan.to_json()`` except ``host`` (named ``hostname`` here): ``backend``,
  ``gpu_targets``, ``cuda_architectures``, ``cmake_flags``, ``threads``, ``ctx_size``,
  ``parallel``, ``n_gpu_layers``, ``flash_attn``, ``log_verbosity``, ``listen``, ``alias``, ``run_env``,
  ``reasons``, ``warnings``; plus ``tensor_split``. Null or empty when there is no plan.
- ``llama_cpp_source``: the source the deploy would use ("pypi-sdist", "git", "tarball" or "distro"), and
  ``sources``: ``{"compile": {...}, "distro": {...}}``, what each would give: ``available``, ``targets``,
  ``version``, ``seconds_to_serving`` (an estimate; null where unknown), ``estimate`` and ``reason``; the
  distro offer adds ``known``, ``release``, ``suite``, ``missing_targets``, ``download_bytes``,
  ``installed_bytes`` and ``facts_from`` (roles/source_plan.py, roles/distro_builds.py).
- ``tls``: ``{mode, scheme, certificate, certificate_path, served_now, recorded_sha256, planned_sha256,
  pin_changes, note}``: whether the host serves https, whose certificate (``generated`` per host or the
  ``operator``'s), the fingerprint its ``deployed.json`` records for clients to pin and whether this deploy
  keeps it (lemfleet/plan_tls.py); null when the host was not reached. The TLS column shows the origin and
  the pinned fingerprint's first bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lemfleet.api import Fleet, plan
from lemfleet.plan_fleet import PlanRequest
from lemfleet.plan_tls import tls_cell, tls_lines

HELP = "print the plan (backend, targets, quant, flags, reasons) for every inventory host; changes nothing"
GIB = 1024**3
COLUMNS = ("HOST", "GPUS", "BACKEND", "TARGETS", "QUANT", "FLAGS", "WARNINGS", "SOURCE", "TLS")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; accepted: a whole number of seconds, at least 1")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inventory", nargs="?", metavar="INVENTORY", help="pyinfra inventory file (or @local, or host1,host2)"
    )
    parser.add_argument("--limit", action="append", default=[], metavar="HOST", help="a group or host glob; repeat")
    parser.add_argument(
        "--data", action="append", default=[], metavar="KEY=VALUE", help="override host data, as pyinfra's --data"
    )
    parser.add_argument(
        "--group-data", action="append", default=[], metavar="DIR", help="extra group_data folder, as pyinfra's"
    )
    parser.add_argument(
        "--connect-timeout", type=_positive_int, default=10, metavar="S", help="SSH connect timeout (10, pyinfra's)"
    )
    parser.add_argument("--json", metavar="OUT", help="write the plans as JSON; '-' prints only the JSON")


# -- rendering (pure) -------------------------------------------------------------------


def _size(size: int | None) -> str:
    if not size:
        return "VRAM ?"
    value = size / GIB
    return f"{value:.0f} GiB" if value >= 10 else f"{value:.1f} GiB"


def gpus_cell(row: dict[str, Any]) -> str:
    """``NVIDIA A100-SXM4-80GB x8 (80 GiB)``; iGPUs and GPUs the plan leaves out are marked."""
    groups: dict[tuple[str, int | None, bool, bool], int] = {}
    for gpu in row["gpus"]:
        unused = bool(row["ok"]) and not gpu["chosen"]
        key = (gpu["name"], gpu["vram_bytes"], gpu["integrated"], unused)
        groups[key] = groups.get(key, 0) + 1
    cells = []
    for (name, vram, integrated, unused), count in groups.items():
        notes = [_size(vram)] + (["iGPU"] if integrated else []) + (["unused"] if unused else [])
        cells.append(f"{name} x{count} ({', '.join(notes)})")
    return "; ".join(cells) or "-"


def targets_cell(row: dict[str, Any]) -> str:
    if row["gpu_targets"]:
        return ",".join(row["gpu_targets"])
    if row["backend"] == "cuda":
        return "sm " + (",".join(row["cuda_architectures"]) or "native")
    return "-"


def quant_cell(row: dict[str, Any]) -> str:
    quant = row["quant"]
    if not quant:
        return "-"
    if quant["value"] == "auto":
        return f"auto (budget {quant['budget_bytes'] / GIB:.1f} GiB)"
    return str(quant["value"] or "?")


def flags_cell(row: dict[str, Any]) -> str:
    if row["backend"] is None:
        return "-"
    return f"-ngl {row['n_gpu_layers']} -c {row['ctx_size']} -np {row['parallel']} -t {row['threads']}"


def source_cell(row: dict[str, Any]) -> str:
    """The source the deploy would use; ``(distro too)`` where the distribution's build would also serve."""
    method = row.get("llama_cpp_source")
    if not method:
        return "-"
    distro = (row.get("sources") or {}).get("distro") or {}
    return f"{method} (distro too)" if method != "distro" and distro.get("available") else method


def source_lines(row: dict[str, Any]) -> list[str]:
    """One line per source: available or not, the targets, the version and the expected time to serving."""
    lines = []
    for name, offer in (row.get("sources") or {}).items():
        if not offer.get("available"):
            lines.append(f"  source {name}: not available: {offer['reason']}")
            continue
        version = offer["version"]
        if isinstance(version, dict):
            version = ", ".join(f"{package} {v}" for package, v in version.items())
        targets = ",".join(offer["targets"]) or "-"
        lines.append(f"  source {name}: {version}; targets {targets}; to serving: {offer['estimate']}")
    return lines


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The fleet's plans as an aligned text table, one line per host (rows as the JSON has them)."""
    lines = [list(COLUMNS)]
    for row in rows:
        lines.append(
            [
                row["host"],
                gpus_cell(row),
                row["backend"] if row["ok"] else "ERROR",
                targets_cell(row),
                quant_cell(row),
                flags_cell(row),
                str(len(row["warnings"])) if row["warnings"] else "-",
                source_cell(row),
                tls_cell(row),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def render_details(rows: Sequence[dict[str, Any]]) -> str:
    """Each host's reasons, quant, warnings and errors, under its name."""
    blocks = []
    for row in rows:
        seen_as = f" ({row['hostname']}, {row['os']}, {row['arch']})" if row["hostname"] else ""
        lines = [f"{row['host']}{seen_as}: {row['backend'] if row['ok'] else 'no plan'}"]
        lines += [f"  error: {error}" for error in row["errors"]]
        lines += [f"  {key}: {why}" for key, why in row["reasons"].items()]
        if row["quant"]:
            lines.append(f"  quant: {row['quant']['note']}")
        lines += source_lines(row)
        lines += tls_lines(row)
        if row["run_env"]:
            lines.append("  environment: " + " ".join(f"{k}={v}" for k, v in row["run_env"].items()))
        lines += [f"  warning: {warning}" for warning in row["warnings"]]
        blocks.append("\n".join(lines))
    planned = sum(1 for row in rows if row["ok"])
    summary = f"{len(rows)} host(s): {planned} planned, {len(rows) - planned} with errors"
    return "\n\n".join([*blocks, summary])


# -- the command ------------------------------------------------------------------------


def collect(request: PlanRequest) -> list[dict[str, Any]]:
    """The rows of :func:`lemfleet.api.plan` (which runs :mod:`lemfleet.plan_fleet` in a child process).

    The request goes to the child on stdin, so ``--data`` values (an API key, say) never appear
    on a command line. Its stderr, pyinfra's messages, passes through.
    """
    fleet = Fleet(request.inventory, data=request.data, group_data=request.group_data)
    planned = plan(fleet, limit=request.limit, connect_timeout=request.connect_timeout, echo=sys.stderr)
    return [host.row for host in planned.hosts]


def run(args: argparse.Namespace) -> int:
    if not args.inventory:
        raise ValueError("give the inventory: lemfleet plan INVENTORY.py (or @local for this machine)")
    looks_like_file = args.inventory.endswith(".py") or os.sep in args.inventory
    if looks_like_file and not os.path.exists(args.inventory):
        raise ValueError(f"inventory file {args.inventory} does not exist")
    request = PlanRequest(
        inventory=args.inventory,
        limit=tuple(args.limit),
        data=tuple(args.data),
        group_data=tuple(args.group_data),
        connect_timeout=args.connect_timeout,
    )
    rows = collect(request)
    document = json.dumps(rows, indent=2) + "\n"
    if args.json == "-":
        sys.stdout.write(document)
    else:
        if args.json:
            Path(args.json).write_text(document, encoding="utf-8")
        print(render_table(rows))
        print()
        print(render_details(rows))
    return 0 if all(row["ok"] for row in rows) else 1
