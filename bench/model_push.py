"""Issue bars for the model push, measured side by side on test-bed hosts.

    python bench/model_push.py [push|rerun|host|all] [--hosts 4] [--size-mib 1024] [--rounds 5]

- push: one 1 GiB file to 4 hosts with lemfleet's controller-mode push (the model step of deploy.py,
  ``lemfleet.roles.model_delivery.install_model``: streamed to a temporary name and hashed on the host as
  it arrives, renamed when the sha256 matches; roles/push_stream.py), against ``scp`` of the same file to
  the same hosts, one scp per host, all at once, as pyinfra pushes to all hosts at once. Each round runs
  both, the order alternating round by round; the figure is the median of the rounds' ratios (each
  lemfleet run over the scp run beside it), and every round's pair is printed. Bar: <= 1.1x, the median
  of at least 5 paired rounds. Two ratios: the whole runs (lemfleet's includes pyinfra's start, connect
  and facts, about 3 s, which scp does not have), and the file's bytes on the links (:class:`LinkWindow`:
  the same measure for both, from the first MiB to the last byte of every host's copy), which is the
  push itself and what the bar is about: hashed on arrival, not after.
- rerun: the same push with the file in place transfers nothing (no push operation changes, and the
  hosts' links carry only SSH's own bytes) and takes at most 2 s per host beyond the no-op baseline,
  ``pyinfra inventories/testbed.py exec -- true`` to the same hosts.

- host: the host's side alone, here, with no SSH: the push's script (roles/push_stream.py) reading the
  file from stdin, with Perl's tee and with coreutils' ``tee`` (perl hidden from PATH), alternating round
  by round; prints the CPU seconds (user + system, the script and all it ran) per GiB of each. Needs no
  test bed and no root; ``all`` does not include it.

Uses the test-bed hosts that are up, and boots more (removing them afterwards) when fewer than --hosts
are running. Needs root. Writes under /var/lib/lemfleet/bench on the hosts and removes it at the end.

pyinfra runs this same file as the deploy that pushes: there it runs :func:`push_deploy`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if __name__ == "__main__":  # the bench; pyinfra runs this file as a deploy, with no __name__ of its own
    from common import PROJECT, median, pyinfra

    sys.path.insert(0, str(PROJECT))

from pyinfra import host
from pyinfra.context import ctx_host

from lemfleet.roles import detect
from lemfleet.roles.hoststate import declare
from lemfleet.roles.model_delivery import ModelArtifact, install_model, managed_paths
from lemfleet.roles.push_stream import stream_script

# The harness only: the deploy that pyinfra runs, and the bench times, imports what deploy.py's model step does.
if __name__ == "__main__" or TYPE_CHECKING:
    from lemfleet import testbed
    from lemfleet.roles.llama_sources import CACHE
    from lemfleet.testbed import HostRecord, hosts
    from lemfleet.testbed.paths import SSH_CONFIG

BENCH_DIR = "/var/lib/lemfleet/bench"
MIB = 1024 * 1024


def push_deploy() -> None:
    """The deploy pyinfra runs from this file: deploy.py's model step, for the file named in --data."""
    path, model_dir = Path(host.data.get("bench_file")), host.data.get("model_dir", BENCH_DIR)
    model = ModelArtifact("bench", path.name, host.data.get("bench_sha256"), path.stat().st_size, local_path=path)
    # As deploy.py does: free disk where the model goes, and the one probe of every managed path.
    facts = detect.gather(extra_paths=[model_dir])
    declare(managed_paths(model, model_dir))
    # pyinfra types a @deploy function as an operation, as in deploy.py (see pyproject.toml).
    install_model(model, facts.disk_free_bytes)  # type: ignore[call-arg, arg-type]


def _run_by_pyinfra() -> bool:
    return bool(ctx_host.isset())


# -- the bench ----------------------------------------------------------------------


def bench_file(size_mib: int) -> tuple[Path, str]:
    """A file of random (incompressible) bytes, made once, and its sha256."""
    path = CACHE / "bench" / f"push-{size_mib}MiB.bin"
    stamp = path.with_name(path.name + ".sha256")
    if not (path.exists() and stamp.exists()):
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with path.open("wb") as handle:
            for _ in range(size_mib // 16):
                chunk = os.urandom(16 * MIB)
                digest.update(chunk)
                handle.write(chunk)
        stamp.write_text(digest.hexdigest())
    return path, stamp.read_text().strip()


def link_bytes(records: list[HostRecord]) -> int:
    """Bytes sent from the controller to these hosts so far, on their veth links."""
    return sum(int(Path(f"/sys/class/net/{r.veth}/statistics/tx_bytes").read_text()) for r in records)


class LinkWindow:
    """The seconds the file's bytes took on the hosts' links: from the moment 1 MiB beyond the start went by
    (SSH's handshakes and pyinfra's facts are a few KiB) to the moment the links had carried ``file_bytes``
    (every host's copy), sampled every 10 ms. The same measure for scp and for lemfleet: what each spends
    before the first byte and after the last (a process start, pyinfra's connect and facts) is left out."""

    def __init__(self, records: list[HostRecord], file_bytes: int) -> None:
        self.records, self.file_bytes = records, file_bytes
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), link_bytes(self.records)))
            time.sleep(0.01)

    def __enter__(self) -> LinkWindow:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        base = self.samples[0][1]
        first = next(t for t, b in self.samples if b - base >= MIB)
        last = next(t for t, b in self.samples if b - base >= self.file_bytes)
        return last - first


def on_hosts(records: list[HostRecord], command: str) -> None:
    for rec in records:
        testbed.ssh(rec, command, timeout=300)


def limits(records: list[HostRecord]) -> list[str]:
    return [arg for rec in records for arg in ("--limit", rec.name)]


def lemfleet_push(records: list[HostRecord], path: Path, sha256: str) -> tuple[float, int, list[str]]:
    """(seconds, bytes on the links, hosts whose push changed something) of one pyinfra run."""
    data = [f"bench_file={path}", f"bench_sha256={sha256}", f"model_dir={BENCH_DIR}"]
    args = ["inventories/testbed.py", "bench/model_push.py", "-y", "--json", *limits(records)]
    before = link_bytes(records)
    seconds, rc, out = pyinfra(*args, *[a for item in data for a in ("--data", item)])
    sent = link_bytes(records) - before
    assert rc == 0, out[-3000:]
    report, _ = json.JSONDecoder().raw_decode(out[out.index("{") :])
    ops = report["results"]["operations"]
    return seconds, sent, sorted({h for op in ops if "| Push " in op["name"] for h in op["success"]})


def scp_push(records: list[HostRecord], path: Path) -> tuple[float, int]:
    """(seconds, bytes on the links) of one scp per host, all started at once."""
    before, started = link_bytes(records), time.monotonic()
    procs = [
        subprocess.Popen(["scp", "-q", "-F", str(SSH_CONFIG), str(path), f"{rec.name}:{BENCH_DIR}/scp-{path.name}"])
        for rec in records
    ]
    codes = [p.wait() for p in procs]
    seconds = time.monotonic() - started
    assert codes == [0] * len(records), codes
    return seconds, link_bytes(records) - before


def bare_run(records: list[HostRecord]) -> float:
    seconds, rc, out = pyinfra("inventories/testbed.py", *limits(records), "-y", "exec", "--", "true")
    assert rc == 0, out[-2000:]
    return seconds


def bench_hosts(count: int) -> tuple[list[HostRecord], list[str]]:
    """``count`` running test-bed hosts, and the names of those booted for the bench."""
    running = [r for r in testbed.load() if hosts.alive(r.pid)][:count]
    added = testbed.add(count - len(running)) if len(running) < count else []
    return running + added, [r.name for r in added]


PUSH_BAR = 1.1


def bench_push(records: list[HostRecord], path: Path, sha256: str, rounds: int) -> None:
    ours, theirs, ratios, windows = [], [], [], []
    dest = f"{BENCH_DIR}/{sha256[:12]}-{path.name}"
    size = path.stat().st_size
    for round_ in range(rounds):
        measured, window = {}, {}
        for method in ("lemfleet", "scp") if round_ % 2 == 0 else ("scp", "lemfleet"):
            # Each starts from the same state: no copy on the hosts, and no dirty page of the one before still
            # being written back (the hosts share one kernel and disk; the second run of a round was slower).
            on_hosts(records, f"rm -f {BENCH_DIR}/*")
            subprocess.run(["sync"], check=True)
            with LinkWindow(records, len(records) * size) as link:
                if method == "lemfleet":
                    seconds, sent, pushed = lemfleet_push(records, path, sha256)
                    assert pushed == sorted(r.name for r in records), pushed
                else:
                    seconds, sent = scp_push(records, path)
            measured[method], window[method] = (seconds, sent), link.seconds
            if method == "lemfleet":  # what landed is what was sent, read back on every host
                on_hosts(records, f"test \"$(sha256sum {dest} | cut -d' ' -f1)\" = {sha256}")
        ours.append(measured["lemfleet"][0])
        theirs.append(measured["scp"][0])
        ratios.append(ours[-1] / theirs[-1])
        windows.append(window["lemfleet"] / window["scp"])
        print(
            f"round {round_ + 1}: "
            + ", ".join(
                f"{m} {s:.1f} s ({b / MIB:.0f} MiB sent; {window[m]:.1f} s on the links)"
                for m, (s, b) in measured.items()
            )
            + f"; ratio {ratios[-1]:.2f}x, on the links {windows[-1]:.2f}x",
            flush=True,
        )
    print(f"{len(records)} hosts, {size / MIB:.0f} MiB each, {rounds} rounds")
    print(f"lemfleet push: median {median(ours):.1f} s  {[round(s, 1) for s in ours]}  "
          f"({len(records) * size / MIB / median(ours):.0f} MiB/s in all)")  # fmt: skip
    print(f"scp:           median {median(theirs):.1f} s  {[round(s, 1) for s in theirs]}  "
          f"({len(records) * size / MIB / median(theirs):.0f} MiB/s in all)")  # fmt: skip
    bare = [bare_run(records) for _ in range(3)]
    print(f"where the time goes: pyinfra's own start, connect and one command to the hosts "
          f"(exec -- true) median {median(bare):.1f} s {[round(b, 1) for b in bare]}; lemfleet beyond scp: median "
          f"{median([o - t for o, t in zip(ours, theirs, strict=True)]):.1f} s")  # fmt: skip
    print(f"paired ratios, whole runs: {[round(r, 2) for r in ratios]}; the file on the links: "
          f"{[round(r, 2) for r in windows]}")  # fmt: skip
    print(f"ratio, whole runs (pyinfra's start, connect and facts included): median of the paired rounds "
          f"{median(ratios):.2f}x; median over median {median(ours) / median(theirs):.2f}x")  # fmt: skip
    print(f"ratio, the file's bytes on the links (first MiB to last byte, hashed on arrival): median of the "
          f"paired rounds {median(windows):.2f}x (bar: <= {PUSH_BAR}x, at least 5 rounds)")  # fmt: skip


def bench_rerun(records: list[HostRecord], path: Path, sha256: str, rounds: int) -> None:
    lemfleet_push(records, path, sha256)  # in place, whatever ran before
    bare, rerun, sent = [], [], []
    for _ in range(rounds):
        bare.append(bare_run(records))
        seconds, link, pushed = lemfleet_push(records, path, sha256)
        assert pushed == [], f"a rerun pushed to {pushed}"
        rerun.append(seconds)
        sent.append(link)
    extra = median(rerun) - median(bare)
    print(f"no-op baseline (exec -- true): median {median(bare):.2f} s  {[round(s, 2) for s in bare]}")
    print(f"rerun, file in place:          median {median(rerun):.2f} s  {[round(s, 2) for s in rerun]}")
    print(f"push operations that changed: none; bytes on the links per rerun: {sent} (SSH's own, no file data)")
    print(
        f"extra: {extra:.2f} s for {len(records)} hosts, {extra / len(records):.2f} s per host (bar: <= 2 s per host)"
    )


def host_side_cpu(path: Path, sha256: str, perl: bool, work: Path) -> tuple[float, float, float]:
    """(user, system, wall) seconds of the push's host script writing ``path`` under ``work`` from stdin."""
    env = dict(os.environ)
    if not perl:
        hidden = work / "no-perl"
        hidden.mkdir(exist_ok=True)
        (hidden / "perl").write_text("#!/bin/sh\nexit 127\n")
        (hidden / "perl").chmod(0o755)
        env["PATH"] = f"{hidden}:{env['PATH']}"
    dest = work / "model.bin"
    script = stream_script(str(dest) + ".partial", str(dest), sha256, "644", "the bench file")
    before, started = os.times(), time.monotonic()
    with path.open("rb") as source:
        subprocess.run(["sh", "-c", script], stdin=source, env=env, check=True)
    wall, after = time.monotonic() - started, os.times()
    dest.unlink()
    return after.children_user - before.children_user, after.children_system - before.children_system, wall


def bench_host_side(path: Path, sha256: str, rounds: int) -> None:
    gib = path.stat().st_size / 1024**3
    figures: dict[str, list[tuple[float, float, float]]] = {"perl": [], "tee": []}
    with tempfile.TemporaryDirectory(dir=CACHE / "bench") as folder:
        for round_ in range(rounds):
            for writer in ("perl", "tee") if round_ % 2 == 0 else ("tee", "perl"):
                figures[writer].append(host_side_cpu(path, sha256, writer == "perl", Path(folder)))
    for writer, runs in figures.items():
        cpu = [(u + s) / gib for u, s, _ in runs]
        print(f"{writer:4}: CPU per GiB median {median(cpu):.2f} s {[round(c, 2) for c in cpu]}; user "
              f"{median([u / gib for u, _, _ in runs]):.2f} s, system {median([s / gib for _, s, _ in runs]):.2f} s; "
              f"wall {median([w / gib for _, _, w in runs]):.2f} s per GiB")  # fmt: skip
    ratio = median([(p[0] + p[1]) / (t[0] + t[1]) for p, t in zip(figures["perl"], figures["tee"], strict=True)])
    print(f"Perl's tee over coreutils' tee, CPU: median of the paired rounds {ratio:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("push", "rerun", "host", "all"), default="all")
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    path, sha256 = bench_file(args.size_mib)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # both read it from the page cache
    if args.what == "host":
        bench_host_side(path, sha256, args.rounds)
        return 0
    records, added = bench_hosts(args.hosts)
    try:
        on_hosts(records, f"mkdir -p {shlex.quote(BENCH_DIR)}")
        if args.what in ("push", "all"):
            bench_push(records, path, sha256, args.rounds)
        if args.what in ("rerun", "all"):
            bench_rerun(records, path, sha256, args.rounds)
    finally:
        for rec in records:
            testbed.ssh(rec, f"rm -rf {shlex.quote(BENCH_DIR)}", check=False)
        for name in added:
            testbed.remove(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
elif _run_by_pyinfra():
    push_deploy()
