"""``lemfleet remove``: decommission hosts, taking off everything lemfleet created and nothing else.

    lemfleet remove INVENTORY.py [--limit HOST] [--data KEY=VALUE] [--dry] [--yes] [--json OUT|-]

A thin layer over :func:`lemfleet.api.remove`. ``--dry`` lists, per host, what would be removed
and what stays, and changes nothing. A real removal asks for confirmation on a terminal; elsewhere
it needs ``--yes``. Exit status: 0 when every host was handled (or, with ``--dry``, listed), 1 when
a host failed or could not be reached, 2 for a bad setting or option (no host was changed then).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "decommission hosts: remove lemfleet's units, user, builds, models, config and record (--dry lists them)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inventory", help="pyinfra inventory file (e.g. inventories/fleet.py)")
    parser.add_argument("--limit", action="append", default=[], help="a group or host glob (repeatable)")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help="a setting (repeatable)")
    parser.add_argument("--dry", action="store_true", help="list what would be removed per host; change nothing")
    parser.add_argument("--yes", action="store_true", help="remove without asking (needed when not on a terminal)")
    parser.add_argument("--json", metavar="OUT", help="also write the result as JSON to OUT ('-': only print JSON)")


def _confirmed(args: argparse.Namespace) -> bool:
    if args.dry or args.yes:
        return True
    where = ", ".join(args.limit) or "every host"
    if not sys.stdin.isatty():
        print(f"lemfleet remove: refused: this removes lemfleet from {where} of {args.inventory}; "
              "add --yes, or see the list first with --dry", file=sys.stderr)  # fmt: skip
        return False
    answer = input(f"Remove lemfleet from {where} of {args.inventory}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    # Here, not at the top: `lemfleet --help` and the other subcommands need not load the API and pyinfra.
    from lemfleet.api import Fleet, FleetSetupError
    from lemfleet.api.remove import remove

    if not _confirmed(args):
        return 2
    try:
        result = remove(Fleet.from_inventory(args.inventory), limit=args.limit, data=args.data, dry=args.dry)
    except FleetSetupError as err:
        raise ValueError(str(err)) from err
    document = json.dumps(result.to_json(), indent=2) + "\n"
    if args.json == "-":
        sys.stdout.write(document)
    else:
        if args.json:
            Path(args.json).write_text(document, encoding="utf-8")
        print(result)
    return 0 if result.ok else 1
