"""A large model pushed from the controller is hashed on the host as it arrives (roles/push_stream.py).

One test-bed host, the model step of deploy.py alone (tests/testbed/deploys/push_model.py), a file of
the size that takes the streamed path. The file lands under its content name with its check record;
a second run sends nothing; a stream whose bytes do not match is rejected and leaves the old file, and
no temporary file, behind. The same push as a non-root user with ``--sudo`` is in test_sudo_secret.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.roles.hoststate import SIDECAR
from lemfleet.roles.push_stream import STREAM_THRESHOLD
from lemfleet.testbed import HostRecord
from tests.testbed.conftest import PyinfraRun, pyinfra

MODEL_DIR = "/var/lib/lemfleet/push-test"


def push(rec: HostRecord, path: Path, sha256: str, *args: str) -> PyinfraRun:
    data = [f"push_file={path}", f"push_sha256={sha256}", f"model_dir={MODEL_DIR}"]
    return pyinfra(
        *(args or ("inventories/testbed.py", "--limit", rec.name)),
        "tests/testbed/deploys/push_model.py",
        "-y",
        "--json",
        *[f"--data={item}" for item in data],
        timeout=600,
    )


def pushed(run: PyinfraRun) -> int:
    return sum(len(op["success"]) for op in run.json["results"]["operations"] if "| Push " in op["name"])


def big_file(tmp: Path, name: str) -> tuple[Path, str]:
    path = tmp / name
    data = os.urandom(STREAM_THRESHOLD + 4096)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def on_host(rec: HostRecord, command: str) -> str:
    return testbed.ssh(rec, command, check=False, timeout=120).strip()


@pytest.fixture(scope="module")
def host(bed: list[HostRecord]) -> Iterator[HostRecord]:
    rec = bed[-1]
    yield rec
    testbed.ssh(rec, f"rm -rf {MODEL_DIR}", check=False)


def test_a_large_push_is_checked_as_it_arrives_and_a_rerun_sends_nothing(host: HostRecord, tmp_path: Path) -> None:
    path, sha256 = big_file(tmp_path, "big-Q4_K_M.gguf")
    dest = f"{MODEL_DIR}/{sha256[:12]}-{path.name}"
    run = push(host, path, sha256)
    assert run.returncode == 0, run.output[-3000:]
    assert pushed(run) == 1
    assert on_host(host, f"sha256sum {dest}").split()[0] == sha256
    size_mtime = on_host(host, f"stat -c '%s %Y' {dest}")
    assert on_host(host, f"cat {dest}{SIDECAR}") == f"{sha256} {size_mtime}"
    assert on_host(host, f"stat -c '%a %U' {dest}") == "644 root"
    name = dest.rsplit("/", 1)[1]
    assert on_host(host, f"ls -A {MODEL_DIR}").split() == [name, name + SIDECAR]  # no .partial left
    again = push(host, path, sha256)
    assert again.returncode == 0, again.output[-3000:]
    assert again.json["results"]["totals"]["success"] == 0, again.json["results"]["operations"]


def test_a_stream_that_does_not_match_is_rejected_and_the_old_file_stays(host: HostRecord, tmp_path: Path) -> None:
    good, good_sha = big_file(tmp_path, "serving.gguf")
    assert push(host, good, good_sha).returncode == 0
    serving = f"{MODEL_DIR}/{good_sha[:12]}-{good.name}"
    record = on_host(host, f"cat {serving}{SIDECAR}")
    # A new model whose bytes arrive different from what the controller resolved (here: another file).
    claimed = hashlib.sha256(b"the model the controller resolved").hexdigest()
    corrupt, got = big_file(tmp_path, "new.gguf")
    dest = f"{MODEL_DIR}/{claimed[:12]}-{corrupt.name}"
    on_host(host, f"echo stale > {dest}")  # whatever was at the new name stays as it was, too
    run = push(host, corrupt, claimed)
    assert run.returncode != 0
    assert f"sha256 mismatch for the copy of {dest}: expected {claimed}, received {got}" in run.output, run.output[
        -3000:
    ]
    assert f"rejected, {dest} left as it was" in run.output
    assert on_host(host, f"cat {dest}") == "stale"
    assert on_host(host, f"ls -A {MODEL_DIR} | grep -c partial || true") == "0"
    assert on_host(host, f"sha256sum {serving}").split()[0] == good_sha
    assert on_host(host, f"cat {serving}{SIDECAR}") == record
