"""A secret written through sudo never passes through a file other accounts can read.

pyinfra's SSH connector, under ``--sudo``, uploads as the login user to ``/tmp/pyinfra-<hash>`` (readable by
all under a usual umask) and then copies the file as root. ``lemfleet.roles.ops.put_text(secret=True)`` stages it in a
0700 directory of the login user's home instead. The test logs in as an unprivileged sudoer on a host where that
user cannot write to /tmp at all: a plain upload fails there, so a secret that arrives proves it never touched
/tmp.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.roles.hoststate import SIDECAR
from lemfleet.roles.ops import UPLOAD_DIR
from lemfleet.roles.push_stream import STREAM_THRESHOLD
from lemfleet.testbed import HostRecord
from lemfleet.testbed.paths import KNOWN_HOSTS, SSH_KEY
from tests.testbed.conftest import PyinfraRun, pyinfra

USER = "deployer"
DEST = "/etc/lemfleet-secret-test"
SECRET = "lemfleet-test-secret-4c1f"


@pytest.fixture(scope="module")
def sudo_host() -> Iterator[HostRecord]:
    rec = testbed.add(1)[0]
    try:
        testbed.ssh(
            rec, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends sudo", timeout=900
        )
        testbed.ssh(
            rec,
            f"useradd -m -s /bin/bash {USER} && install -d -m 700 -o {USER} -g {USER} /home/{USER}/.ssh && "
            f"install -m 600 -o {USER} -g {USER} /root/.ssh/authorized_keys /home/{USER}/.ssh/authorized_keys && "
            f"echo '{USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{USER} && chmod 440 /etc/sudoers.d/{USER} && "
            # /tmp closed to everyone but root: an upload staged there fails.
            "chmod 1770 /tmp",
        )
        yield rec
    finally:
        testbed.remove(rec.name)


def put(rec: HostRecord, *data: str) -> PyinfraRun:
    return as_deployer(rec, "tests/testbed/deploys/put_secret.py", *data)


def as_deployer(rec: HostRecord, deploy: str, *data: str) -> PyinfraRun:
    """``deploy`` run as the unprivileged sudoer with ``--sudo``."""
    args = [f"--data={item}" for item in data]
    return pyinfra(
        rec.address,
        deploy,
        "-y",
        "--json",
        "--sudo",
        f"--user={USER}",
        f"--key={SSH_KEY}",
        f"--data=ssh_known_hosts_file={KNOWN_HOSTS}",
        "--data=ssh_strict_host_key_checking=yes",
        *args,
        timeout=300,
    )


def test_a_plain_upload_through_sudo_goes_through_tmp(sudo_host: HostRecord) -> None:
    """The control: with /tmp closed, pyinfra's own staging fails, so the next test can tell."""
    run = put(sudo_host, "content=not-a-secret", "secret=no")
    assert run.returncode != 0, run.output
    assert "Failed to upload file" in run.output and "Permission denied" in run.output, run.output[-3000:]


def test_a_secret_through_sudo_is_staged_in_a_private_directory(sudo_host: HostRecord) -> None:
    rec = sudo_host
    run = put(rec, f"content={SECRET}", "secret=yes")
    assert run.returncode == 0, run.output[-3000:]
    assert SECRET not in run.output
    assert testbed.ssh(rec, f"cat {DEST}") == SECRET
    assert testbed.ssh(rec, f"stat -c '%a %U:%G' {DEST}").strip() == "640 root:root"
    staging = f"/home/{USER}/{UPLOAD_DIR}"
    assert testbed.ssh(rec, f"stat -c '%a %U' {staging}").strip() == f"700 {USER}"
    assert testbed.ssh(rec, f"ls -A {staging}").strip() == "", "the staged copy was left behind"
    assert testbed.ssh(rec, f"grep -rl {SECRET} /tmp /var/tmp /home || true").strip() == ""
    # A second run finds the file as wanted and uploads nothing.
    again = put(rec, f"content={SECRET}", "secret=yes")
    assert again.returncode == 0, again.output[-3000:]
    assert again.json["results"]["totals"]["success"] == 0, again.json["results"]["operations"]


def test_a_large_model_push_through_sudo_goes_straight_into_the_root_owned_directory(
    sudo_host: HostRecord, tmp_path: Path
) -> None:
    """Issue 13 item 8: 64 MiB and more as a non-root user with --sudo, hashed as it arrives.

    /tmp is closed here, so pyinfra's own upload (staged in /tmp) would fail: the push streams through
    ``sudo -n`` into the root-owned model directory and nothing is left anywhere else.
    """
    rec, model_dir = sudo_host, "/var/lib/lemfleet/push-test"
    data = os.urandom(STREAM_THRESHOLD + 1)
    path = tmp_path / "big-Q8_0.gguf"
    path.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    dest = f"{model_dir}/{sha256[:12]}-{path.name}"
    push = (
        "tests/testbed/deploys/push_model.py",
        f"push_file={path}",
        f"push_sha256={sha256}",
        f"model_dir={model_dir}",
    )
    run = as_deployer(rec, *push)
    assert run.returncode == 0, run.output[-3000:]
    assert testbed.ssh(rec, f"sha256sum {dest}").split()[0] == sha256
    assert testbed.ssh(rec, f"stat -c '%a %U:%G' {dest} {model_dir}").split() == [
        "644",
        "root:root",
        "755",
        "root:root",
    ]
    size_mtime = testbed.ssh(rec, f"stat -c '%s %Y' {dest}").strip()
    assert testbed.ssh(rec, f"cat {dest}{SIDECAR}").strip() == f"{sha256} {size_mtime}"
    assert testbed.ssh(rec, f"ls -A {model_dir}").split() == sorted(
        [dest.rsplit("/", 1)[1], dest.rsplit("/", 1)[1] + SIDECAR]
    )
    assert testbed.ssh(rec, f"find /tmp /var/tmp /home/{USER} -size +1M").strip() == ""
    again = as_deployer(rec, *push)
    assert again.returncode == 0, again.output[-3000:]
    assert again.json["results"]["totals"]["success"] == 0, again.json["results"]["operations"]
