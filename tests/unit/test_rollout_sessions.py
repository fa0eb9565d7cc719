"""One SSH session per host for a rollout's lock and reads: the output split back into its parts.

The sessions run for real on ``@local`` targets (``sh -c`` here instead of
ssh), reading files of a temporary directory; no lock is taken here, as the
host lock's path is a real system path.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from lemfleet.api.locks import MARK, _split, read_files
from lemfleet.api.rollout import parse_record, records_of
from lemfleet.paths import DEPLOY_RECORD
from lemfleet.sshtunnel import InventoryTarget


def test_a_session_output_splits_into_the_answer_and_each_file() -> None:
    text = f'taken\n{MARK}/a\n{{"x": 1}}\n{MARK}/b\n{MARK}/c\nno newline at the end'
    head, files = _split(text, ["/a", "/b", "/c"])
    assert head == "taken\n"
    assert files == {"/a": '{"x": 1}\n', "/b": None, "/c": "no newline at the end"}


def test_a_file_without_a_trailing_newline_does_not_hide_the_next_one() -> None:
    head, files = _split(f'{{"owner": 1}}{MARK}/a\n{{"y": 2}}{MARK}/b\n', ["/a", "/b"])
    assert head == '{"owner": 1}' and files == {"/a": '{"y": 2}', "/b": None}


def test_read_files_reads_every_host_in_one_session_each(tmp_path: Path) -> None:
    (tmp_path / "deployed.json").write_text('{"model": {"sha256": "aa"}, "build": {"id": "b1"}}\n')
    (tmp_path / "broken.json").write_text("{not json")
    paths = [str(tmp_path / "deployed.json"), str(tmp_path / "missing.json"), str(tmp_path / "broken.json")]
    sessions = read_files([InventoryTarget("here", None), InventoryTarget("there", None)], paths)
    assert set(sessions) == {"here", "there"}
    files = sessions["here"].files
    assert sessions["here"].problem is None
    assert parse_record(files[paths[0]]) == {"model": {"sha256": "aa"}, "build": {"id": "b1"}}
    assert files[paths[1]] is None
    assert parse_record(files[paths[2]]) is None


def test_records_of_reads_the_deploy_record_of_each_session(tmp_path: Path) -> None:
    from lemfleet.api.locks import HostSession

    sessions = {"a": HostSession(None, {DEPLOY_RECORD: '{"backend": "cpu"}'}), "b": HostSession(None, {})}
    assert records_of(sessions) == {"a": {"backend": "cpu"}, "b": None}


def test_a_held_lock_session_stays_open_and_releases_in_that_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is taken and the record read in one session, which stays open; the release is a word
    written to it (no login of its own) and removes only this rollout's lock."""
    from lemfleet.api import locks

    lock = tmp_path / "state" / "rollout.lock"
    monkeypatch.setattr(locks, "HOST_LOCK", str(lock))
    record = tmp_path / "deployed.json"
    record.write_text('{"build": {"id": "b1"}}')  # no trailing newline
    owner = locks.Owner.me("r1")
    held = locks.hold_host_locks([InventoryTarget("here", None)], owner, read=[str(record)])
    assert held.sessions["here"].problem is None
    assert held.sessions["here"].files == {str(record): '{"build": {"id": "b1"}}'}
    assert json.loads(lock.read_text())["rollout"] == "r1"
    session = held.waiting["here"]
    assert session.poll() is None  # still open, holding the lock
    record.write_text('{"build": {"id": "b2"}}\n')
    after = held.release(read=[str(record)])
    assert session.returncode == 0 and not held.waiting
    assert after["here"].files == {str(record): '{"build": {"id": "b2"}}\n'}
    assert not lock.exists()


def test_a_lock_held_by_another_rollout_is_reported_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lemfleet.api import locks

    lock = tmp_path / "rollout.lock"
    monkeypatch.setattr(locks, "HOST_LOCK", str(lock))
    other = locks.Owner("r0", "elsewhere", "ops", 1, 0.0)
    lock.write_text(json.dumps(dataclasses.asdict(other)))
    held = locks.hold_host_locks([InventoryTarget("here", None)], locks.Owner.me("r1"))
    problem = held.sessions["here"].problem
    assert problem is not None and "rollout r0 by ops@elsewhere" in problem and "--break-lock" in problem
    assert not held.waiting  # nothing of ours to release: the session ended
    held.release()
    assert json.loads(lock.read_text())["rollout"] == "r0"


def test_a_session_that_ended_is_released_in_a_session_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session cut while the rollout ran (here: killed) does not leave the lock behind."""
    from lemfleet.api import locks

    lock = tmp_path / "rollout.lock"
    monkeypatch.setattr(locks, "HOST_LOCK", str(lock))
    held = locks.hold_host_locks([InventoryTarget("here", None)], locks.Owner.me("r1"))
    assert lock.exists()
    held.waiting["here"].kill()
    held.waiting["here"].wait()
    held.release()
    assert not lock.exists()


def test_an_unreachable_host_gives_no_problem_and_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ssh's own failure (exit 255 before the script ran) reads as unreachable: its batch reports it."""
    from lemfleet.api import locks
    from lemfleet.sshtunnel import SshOptions

    monkeypatch.setattr(locks, "HOST_LOCK", str(tmp_path / "rollout.lock"))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text("#!/bin/sh\necho 'ssh: connect to host far: Connection refused' >&2\nexit 255\n")
    (fake / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    target = InventoryTarget("far", SshOptions(hostname="far"))
    held = locks.hold_host_locks([target], locks.Owner.me("r1"), read=["/etc/lemfleet/deployed.json"])
    assert held.sessions == {"far": locks.HostSession(None, {"/etc/lemfleet/deployed.json": None})}
    assert not held.waiting
