"""``lemfleet prometheus``: write Prometheus's targets, an example scrape config and alert rules for a fleet.

    lemfleet prometheus INVENTORY.py [--out DIR] [--key-file PATH] [--limit HOST]

A thin layer over :mod:`lemfleet.api.prometheus`. It reads each host's ``deployed.json`` (all hosts
at once) and writes ``DIR/targets.json`` (file_sd, labelled with host, group, backend, GPU, unit,
build id and model sha256), ``DIR/prometheus.yml`` and ``DIR/lemfleet-rules.yml``. ``--key-file``
is where the scrape config reads the scrape key (``server_metrics_key``) on the Prometheus host;
lemfleet never writes that key anywhere but the hosts' key files. Hosts that cannot be scraped
(loopback only, not deployed) are listed with the reason. A host with TLS (``server_tls``) gets an
https scrape job of its own whose ``ca_file``, ``DIR/tls/HOST.crt``, is the certificate its
``deployed.json`` pins (lemfleet/prometheus_tls.py). Exit status 0, or 1 when no host is a target.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lemfleet.api import Fleet
from lemfleet.api.prometheus import prometheus_files

HELP = "write Prometheus file_sd targets, a scrape config and alert rules for the fleet's servers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inventory", help="pyinfra inventory file (e.g. inventories/fleet.py)")
    parser.add_argument("--out", default="out/prometheus", help="where the files go (default out/prometheus)")
    parser.add_argument(
        "--key-file",
        default="/etc/prometheus/lemfleet-scrape-key",
        help="path of the scrape key on the Prometheus host (bearer_token_file)",
    )
    parser.add_argument("--limit", action="append", default=[], help="a host name (repeatable)")


def run(args: argparse.Namespace) -> int:
    files = prometheus_files(Fleet.from_inventory(args.inventory), limit=args.limit)
    for path in files.write(Path(args.out), key_file=args.key_file):
        print(f"wrote {path}")
    for job in files.tls:
        print(f"{job.host}: https, certificate sha256 {job.fingerprint} pinned" + (
            f", checked as {job.server_name}" if job.server_name else ""))  # fmt: skip
    for host, why in files.skipped.items():
        print(f"{host}: not a target: {why}")
    count = len(files.targets) + sum(len(job.targets) for job in files.tls)
    print(f"{count} target(s); place the scrape key (server_metrics_key) at {args.key_file}")
    return 0 if count else 1
