"""The ``lemfleet`` command: small controller-side tools around a pyinfra deploy.

Each subcommand lives in its own module, which provides ``HELP`` (one line), ``add_arguments``
(argparse) and ``run(args) -> exit status``; adding one is one line in :data:`SUBCOMMANDS`.
Modules are imported only to build the parser, so heavy imports belong inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, str] = {
    "smoke": "lemfleet.smoke_cli",
    "report": "lemfleet.report",
    "demo": "lemfleet.demo",
    "plan": "lemfleet.plan_cli",
    "rollout": "lemfleet.rollout_cli",
    "rollback": "lemfleet.rollback_cli",
    "status": "lemfleet.status_cli",
    "prometheus": "lemfleet.prometheus_cli",
    "remove": "lemfleet.remove_cli",
}

USAGE_ERROR = 2


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; with ``only``, that one's module alone is imported (the others
    are listed with their names only), so a command starts without loading what the others need."""
    parser = argparse.ArgumentParser(
        prog="lemfleet",
        description="Serve a GGUF model across a fleet with llama-server, and prove it works.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        if only is not None and name != only:
            commands.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; setup problems (bad file, bad setting) exit 2 with one clear line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None).parse_args(argv)
    try:
        status: int = args.run(args)
    except (ValueError, OSError) as err:
        print(f"lemfleet {args.command}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    return status


if __name__ == "__main__":
    sys.exit(main())
