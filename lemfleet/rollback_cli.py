"""``lemfleet rollback``: put hosts back on their previous build and model, through the health gate.

    lemfleet rollback INVENTORY.py [--limit H] [--dry] [--break-lock]

A thin layer over :func:`lemfleet.api.rollback` (see there). The previous state is the one the
last passing change replaced on each host; after a rollback the two swap, so a second rollback
goes forward again. It prints one line per host and writes ``out/rollouts/<id>.json`` and
``.md`` (``"kind": "rollback"``). Exit status: 0 when every host serves its previous state (or,
with ``--dry``, after printing what each would go back to), 1 when any host could not be rolled
back (no previous state, or the previous state failed the gate and what served before serves
again), 2 for a bad inventory or option, or a lock held by a rollout (nothing was changed then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lemfleet.api import Fleet, FleetSetupError
from lemfleet.api.locks import LockHeld
from lemfleet.api.rollback import rollback
from lemfleet.api.rollout import RECORDS
from lemfleet.rollout_cli import events

HELP = "put hosts back on their previous build and model, through the same health gate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inventory", help="pyinfra inventory file (e.g. inventories/fleet.py)")
    parser.add_argument("--limit", action="append", default=[], help="a group or host glob (repeatable)")
    parser.add_argument("--dry", action="store_true", help="print what each host would go back to; change nothing")
    parser.add_argument("--break-lock", action="store_true", help="take over the fleet's lock from a stale rollout")
    parser.add_argument("--records", default=str(RECORDS), help=f"where records go (default {RECORDS})")
    parser.add_argument("--quiet", action="store_true", help="no per-operation lines, only the summary")


def run(args: argparse.Namespace) -> int:
    fleet = Fleet.from_inventory(args.inventory)
    try:
        result = rollback(
            fleet,
            limit=args.limit,
            dry=args.dry,
            break_lock=args.break_lock,
            records=Path(args.records),
            on_event=events(args.quiet),
        )
    except LockHeld as err:
        print(f"lemfleet rollback: refused: {err}", file=sys.stderr)
        return 2
    except FleetSetupError as err:
        raise ValueError(str(err)) from err
    if args.dry:
        for r in result.record.batches[0].results:
            print(f"  {r.host}: {r.outcome}: {'; '.join(r.changes or r.errors)}")
        return 0
    print(result)
    for r in result.record.batches[0].results:
        for error in r.errors:
            print(f"  {r.host}: {error}", file=sys.stderr)
    print(f"record: {result.path}")
    return 0 if result.ok else 1
