"""``lemfleet status``: one row per host of what it runs now, and whether it still matches its deploy.

    lemfleet status INVENTORY.py [--limit HOST] [--json OUT|-] [--markdown OUT]

A thin layer over :func:`lemfleet.api.status`. Columns: state, backend, build id, model and
sha256, uptime, restarts, ``/health``, requests running and waiting and tokens predicted (from
``/metrics``, read on the host over SSH, since a loopback server cannot be scraped from here), the
last smoke test's tokens/s, and drift. A host with TLS (``server_tls``) is probed over https with
curl pinned to the public key its ``deployed.json`` records; its health shows as ``200 https``, the
JSON adds ``scheme`` and ``tls_sha256`` (the certificate it serves), and a certificate other than the
recorded one is drift. Every host is read at the same time. Exit status: 0 when
every host is active, healthy and matches its ``deployed.json``; 1 otherwise (an unreachable host
included); 2 for an unreadable inventory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lemfleet.api import Fleet
from lemfleet.api.status import status

HELP = "show what each host runs now (build, model, health, restarts, drift from its deploy record)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inventory", help="pyinfra inventory file (e.g. inventories/fleet.py)")
    parser.add_argument("--limit", action="append", default=[], help="a host name (repeatable)")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON to OUT ('-': only print JSON)")
    parser.add_argument("--markdown", metavar="OUT", help="also write a Markdown table to OUT")
    parser.add_argument("--smoke-dir", default="out/smoke", help="where the deploys' smoke results are")


def run(args: argparse.Namespace) -> int:
    found = status(Fleet.from_inventory(args.inventory), limit=args.limit, smoke_dir=args.smoke_dir)
    document = json.dumps(found.to_json(), indent=2) + "\n"
    if args.json == "-":
        sys.stdout.write(document)
    else:
        if args.json:
            Path(args.json).write_text(document, encoding="utf-8")
        print(found)
    if args.markdown:
        Path(args.markdown).write_text(found.markdown(), encoding="utf-8")
    return 0 if found.ok else 1
