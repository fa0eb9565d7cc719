"""``lemfleet smoke``: check endpoints (or an inventory's hosts), print a table, write reports.

Exit status: 0 when every check passed, 1 when any failed, 2 for a usage or setup error. The
API key comes from a file or an environment variable so that it never sits on a command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from lemfleet.api.checks import smoke_target
from lemfleet.api_keys import KEY, first_key
from lemfleet.inventory_loader import inventory_targets
from lemfleet.junit import write_junit
from lemfleet.report import render_table, results_document
from lemfleet.smoke import CHECKS, CheckFailed, SmokeResult, Step, run_bounded, smoke_check
from lemfleet.sshtunnel import InventoryTarget, TunnelError, forward
from lemfleet.tls_client import client_verify, normalise

HELP = "check llama-server endpoints: health, models, chat, streamed chat"


def load_api_key(*, key_file: str | os.PathLike[str] | None = None, env_var: str | None = None) -> str | None:
    """Read the API key from a file (llama-server's ``--api-key-file`` format) or an env var.

    The file is read exactly as llama-server reads it (:mod:`lemfleet.api_keys`): one key a line,
    lines starting with ``#`` are comments, and the first key is used. A key that holds whitespace
    is refused, since llama-server would load it verbatim and no request could match it. Errors
    name the source and the line, never the key.
    """
    if key_file is not None:
        path = Path(key_file)
        try:
            content = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ValueError(f"cannot read API key file {path}: {err.strerror}") from err
        key = first_key(content)
        if key is None:
            raise ValueError(f"API key file {path} holds no key (one key a line, # comments)")
        if not KEY.fullmatch(key):
            line = content.split("\n").index(key) + 1
            raise ValueError(f"API key file {path} line {line}: a key must be printable ASCII without spaces")
        return key
    if env_var is not None:
        value = os.environ.get(env_var, "").strip()
        if not value:
            raise ValueError(f"environment variable {env_var} is unset or empty; set it to the key")
        return value
    return None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; accepted: an integer of 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; accepted: seconds above 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="*", metavar="URL", help="base URL, e.g. http://h:8080")
    parser.add_argument(
        "--inventory",
        metavar="INV.py",
        help="pyinfra inventory; each host is reached through an SSH port forward",
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api-key-file", metavar="FILE", help="file holding the API key")
    key.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the key")
    parser.add_argument("--model", metavar="ALIAS", help="model id /v1/models must list")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls-fingerprint",
        metavar="SHA256",
        help="https URLs: pin the server's certificate to this sha256 (deploy output, deployed.json service.tls); "
        "inventory hosts are pinned to their record's by themselves",
    )
    tls.add_argument("--cacert", metavar="PEM", help="https URLs: trust this CA or certificate file")
    parser.add_argument("--concurrency", type=_positive_int, default=8, metavar="N", help="hosts at once (8)")
    parser.add_argument("--timeout", type=_positive_float, default=120.0, metavar="S", help="per request (120)")
    parser.add_argument(
        "--health-timeout",
        type=_positive_float,
        default=300.0,
        metavar="S",
        help="how long a model may take to load (300)",
    )
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--junit", metavar="OUT", help="write JUnit XML, one case per host+check")
    parser.add_argument(
        "--load",
        type=_positive_int,
        metavar="N",
        help="instead: send N chat requests at once to one endpoint",
    )


Target = str | InventoryTarget


def _targets(args: argparse.Namespace) -> list[Target]:
    targets: list[Target] = list(args.urls)
    if args.inventory:
        targets += inventory_targets(args.inventory)
    if not targets:
        raise ValueError("give at least one URL or --inventory INV.py")
    return targets


def _smoke_one(target: Target, options: dict[str, Any], tls: dict[str, str | None] | None = None) -> SmokeResult:
    if isinstance(target, str):
        try:
            verify = client_verify(target, **(tls or {}))
        except OSError as err:  # not the pinned certificate (PinMismatch), or no handshake: nothing sent
            result = SmokeResult(host=target, url=target)
            result.steps = [Step("tls", "failed", str(err))]
            result.steps += [Step(n, "skipped", "not run: the certificate was not checked") for n in CHECKS]
            return result
        return smoke_check(target, **options, verify=verify)
    return smoke_target(target, options)


def _write_outputs(args: argparse.Namespace, results: list[SmokeResult], **extra: Any) -> None:
    if args.json:
        document = results_document(results, **extra)
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if args.junit:
        write_junit(results, args.junit)


def _run_load(args: argparse.Namespace, target: Target, api_key: str | None) -> int:
    from lemfleet.smoke_load import load_test  # only --load needs the concurrent client

    options: dict[str, Any] = {"api_key": api_key, "model_alias": args.model}
    options.update(requests=args.load, timeout=args.timeout, health_timeout=args.health_timeout)
    name = target if isinstance(target, str) else target.name
    try:
        if isinstance(target, str):
            load = load_test(target, **options)
        else:
            with forward(target) as url:
                load = load_test(url, **options)
    except (CheckFailed, TunnelError) as err:
        print(f"{name}: no load sent: {err}", file=sys.stderr)
        return 1
    print(f"{name}: {load.summary()}")
    for problem, count in load.problems.items():
        print(f"  {count}x {problem}")
    result = SmokeResult(host=name, url=load.url, steps=[load.to_step()])
    _write_outputs(args, [result], load=load.to_json())
    return 0 if load.ok else 1


def run(args: argparse.Namespace) -> int:
    api_key = load_api_key(key_file=args.api_key_file, env_var=args.api_key_env)
    targets = _targets(args)
    if args.load:
        if len(targets) != 1:
            raise ValueError(f"--load takes exactly one endpoint, got {len(targets)}")
        return _run_load(args, targets[0], api_key)
    options = {
        "api_key": api_key,
        "model_alias": args.model,
        "timeout": args.timeout,
        "health_timeout": args.health_timeout,
    }
    if args.tls_fingerprint:
        normalise(args.tls_fingerprint)  # a typo is refused before anything is contacted
    tls = {"fingerprint": args.tls_fingerprint, "cafile": args.cacert}
    results = run_bounded(lambda t: _smoke_one(t, options, tls), targets, args.concurrency)
    print(render_table(results), end="")
    _write_outputs(args, results)
    return 0 if all(result.ok for result in results) else 1
