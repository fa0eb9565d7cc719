"""``lemfleet rollout``: deploy a fleet in health-gated batches that stop before they can take it down.

    lemfleet rollout INVENTORY.py [--batches 1,10%,50%,100%] [--max-fail 0|N|P%] [--limit H]
                     [--data KEY=VALUE] [--resume ID] [--dry] [--break-lock]

A thin layer over :func:`lemfleet.api.rollout` (see there and :mod:`lemfleet.api.batches`). It
prints each host's operations as they finish, then one line per host and batch, and writes
``out/rollouts/<id>.json`` and ``.md``. Exit status: 0 when every batch passed (or, with ``--dry``,
after printing what would run), 1 when the rollout stopped, 2 for a bad setting, a bad option
or a lock held by another rollout (nothing was changed then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lemfleet.api import Event, Fleet, FleetSetupError, print_events
from lemfleet.api.batches import DEFAULT_BATCHES
from lemfleet.api.locks import LockHeld
from lemfleet.api.rollout import RECORDS, rollout

HELP = "roll a deploy out in health-gated batches, canaries first; a failing host is rolled back"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inventory", help="pyinfra inventory file (e.g. inventories/fleet.py)")
    parser.add_argument(
        "--batches",
        default=DEFAULT_BATCHES,
        help="how far each batch reaches (default " + DEFAULT_BATCHES.replace("%", "%%") + ")",
    )
    parser.add_argument("--max-fail", default="0", help="hosts of one batch that may fail: 0 (default), N or P%%")
    parser.add_argument("--limit", action="append", default=[], help="a group or host glob (repeatable)")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help="a setting (repeatable)")
    parser.add_argument("--resume", metavar="ID", help="continue a stopped rollout, rechecking earlier batches")
    parser.add_argument("--dry", action="store_true", help="print the batches and what would change; change nothing")
    parser.add_argument("--break-lock", action="store_true", help="take over the fleet's lock from a stale rollout")
    parser.add_argument("--records", default=str(RECORDS), help=f"where rollout records go (default {RECORDS})")
    parser.add_argument("--quiet", action="store_true", help="no per-operation lines, only the summary")


def events(quiet: bool):
    """An ``on_event`` printing rollout and batch lines, and each host's operations unless ``quiet``."""

    def show(event: Event) -> None:
        if event.kind in ("rollout_started", "batch_started", "batch_done", "rollout_done"):
            print(f"--> {event.message}", flush=True)
        elif not quiet:
            print_events(event)

    return show


def run(args: argparse.Namespace) -> int:
    fleet = Fleet.from_inventory(args.inventory)
    try:
        result = rollout(
            fleet,
            batches=args.batches,
            max_fail=args.max_fail,
            limit=args.limit,
            data=args.data,
            resume=args.resume,
            dry=args.dry,
            break_lock=args.break_lock,
            records=Path(args.records),
            on_event=events(args.quiet),
        )
    except LockHeld as err:
        print(f"lemfleet rollout: refused: {err}", file=sys.stderr)
        return 2
    except FleetSetupError as err:
        raise ValueError(str(err)) from err
    if args.dry:
        for batch in result.record.batches:
            print(f"batch {batch.index} ({batch.status}):")
            for r in batch.results:
                changes = ", ".join(r.changes) or "nothing"
                print(f"  {r.host}: {r.outcome}; would change: {changes}")
        return 0
    print(result)
    print(f"record: {result.path}")
    return 0 if result.ok else 1
