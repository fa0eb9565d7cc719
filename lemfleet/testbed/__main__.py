"""``python -m lemfleet.testbed up N [--suite S] | add N | status | down | freeze/thaw/kill/cut/restore HOST``."""

from __future__ import annotations

import argparse
import sys

from lemfleet import testbed
from lemfleet.testbed import rootfs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lemfleet.testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("up", "tear down, then boot N fresh hosts"),
        ("add", "boot N more hosts"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("count", type=int, nargs="?", default=1)
        p.add_argument("--suite", choices=rootfs.SUITES, default=rootfs.DEFAULT_SUITE)
    sub.add_parser("status", help="list hosts, their process, link and systemd state")
    sub.add_parser("down", help="remove every host and all leftovers")
    for name in ("freeze", "thaw", "kill", "cut", "restore"):
        sub.add_parser(name, help=f"fault: {name} a host").add_argument("host")
    args = parser.parse_args(argv)

    if args.command in ("up", "add"):
        if args.count < 1:
            parser.error(f"count={args.count} is not valid; accepted: 1 or more")
        records = (testbed.up if args.command == "up" else testbed.add)(args.count, args.suite)
        for rec in records:
            print(f"{rec.name}\t{rec.address}\t{rec.suite}")
    elif args.command == "status":
        rows = testbed.status()
        if not rows:
            print("no test-bed hosts are up")
        for row in rows:
            print(f"{row.name}\t{row.address}\t{row.suite}\t{row.process}\tlink {row.link}\t{row.system}")
    elif args.command == "down":
        testbed.down()
        left = testbed.leftovers()
        if left:
            print("left behind: " + ", ".join(left), file=sys.stderr)
            return 1
    else:
        action = {
            "freeze": testbed.freeze,
            "thaw": testbed.thaw,
            "kill": testbed.kill,
            "cut": testbed.cut_link,
            "restore": testbed.restore_link,
        }[args.command]
        action(args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
