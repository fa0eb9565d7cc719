"""One SSH session per host for a rollout's lock and reads: the output split back into its parts.

The sessions run for real on ``@local`` targets (``sh -c`` here instead of
ssh), reading files of a temporary directory; no lock is taken here, as the
host lock's path is a real system path.
"""

from __future__ import annotations

from pathlib import Path

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
