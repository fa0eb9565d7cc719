"""The Markdown fleet report, the terminal table and JUnit, on results recorded from a real run.

``fixtures/llama-server/smoke-results.json`` was written by ``lemfleet smoke``'s JSON writer
after smoking a real llama-server three ways: with the right key (cpu-01), with a wrong key
(cpu-02) and at a port where nothing listened (gpu-01).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lemfleet.junit import junit_tree, write_junit
from lemfleet.report import read_results, render_markdown, render_table, results_document
from lemfleet.smoke_result import CHECKS, SmokeResult, Step

RECORDED = Path(__file__).parent / "fixtures" / "llama-server" / "smoke-results.json"


@pytest.fixture
def results() -> list[SmokeResult]:
    return read_results(RECORDED)


def test_markdown_has_one_row_per_host_with_the_figures(results: list[SmokeResult]) -> None:
    lines = render_markdown(results).splitlines()
    assert "1 of 3 hosts passed." in lines
    header = lines.index("| Host | Backend | Model | Tokens/s | Time to first token | Status |")
    rows = [line.split(" | ") for line in lines[header + 2 :]]
    assert [row[0].lstrip("| ") for row in rows] == ["cpu-01", "cpu-02", "gpu-01"]
    assert rows[0][1:3] == ["cpu", "tiny-test"]
    assert rows[0][3] == f"{results[0].decode_tokens_per_s:.1f}"
    assert rows[0][4] == f"{results[0].time_to_first_token_s:.3f} s"
    assert rows[0][5] == "pass |"
    assert rows[1][5].startswith("**FAIL: models: HTTP 401: Invalid API Key; chat:")
    assert rows[2][1:5] == ["-", "-", "-", "-"]
    assert "health: not healthy before the deadline" in rows[2][5]


def test_markdown_cells_cannot_break_the_table() -> None:
    result = SmokeResult("a|b", "http://a", [Step("chat", "failed", "bad | answer\nsecond line")])
    row = render_markdown([result]).splitlines()[-1]
    assert row.count(" | ") == 5
    assert "a\\|b" in row and "bad \\| answer second line" in row


def test_model_falls_back_to_the_file_name_from_props() -> None:
    result = SmokeResult("h", "http://h", [Step("health", "passed")], model_path="/m/x.gguf")
    assert "| x.gguf |" in render_markdown([result])


def test_terminal_table_lists_checks_then_failures(results: list[SmokeResult]) -> None:
    lines = render_table(results).splitlines()
    assert lines[0].split() == ["HOST", *(c.upper() for c in CHECKS), "TOKENS/S", "TTFT", "STATUS"]
    assert lines[1].split()[:6] == ["cpu-01", "passed", "passed", "passed", "passed", "passed"]
    assert lines[3].split()[:6] == ["gpu-01", "failed", "skipped", "skipped", "skipped", "skipped"]
    assert lines[4] == "cpu-02: models failed: HTTP 401: Invalid API Key"
    assert lines[-1].startswith("gpu-01: health failed: not healthy before the deadline")


def test_json_round_trip_is_lossless(results: list[SmokeResult], tmp_path: Path) -> None:
    path = tmp_path / "again.json"
    path.write_text(json.dumps(results_document(results)))
    assert read_results(path) == results
    assert json.loads(path.read_text())["ok"] is False


def test_junit_holds_one_case_per_host_and_check(results: list[SmokeResult], tmp_path: Path) -> None:
    path = tmp_path / "smoke.xml"
    write_junit(results, path)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        (host, check) for host in ("cpu-01", "cpu-02", "gpu-01") for check in CHECKS
    ]
    failed = [(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None]
    assert failed == [
        ("cpu-02", "models"),
        ("cpu-02", "chat"),
        ("cpu-02", "stream"),
        ("gpu-01", "health"),
    ]
    skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
    assert skipped == ["auth", "models", "chat", "stream"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("15", "4", "4")


def test_junit_failure_text_names_host_url_and_check(results: list[SmokeResult]) -> None:
    root = junit_tree(results).getroot()
    assert root is not None
    failure = root.find("./testsuite/testcase[@classname='gpu-01']/failure")
    assert failure is not None and failure.text is not None
    assert failure.text.startswith("http://127.0.0.1:18099: health: not healthy")


def test_a_directory_of_per_host_results_is_read(results: list[SmokeResult], tmp_path: Path) -> None:
    # The deploy's smoke step writes one result per host: out/smoke/<host>.json.
    for result in results:
        (tmp_path / f"{result.host}.json").write_text(json.dumps(result.to_json()))
    assert read_results(tmp_path) == sorted(results, key=lambda r: r.host)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty} holds no .json smoke results"):
        read_results(empty)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{not json", "is not JSON"),
        ('{"load": {}}', "holds no smoke results"),
    ],
)
def test_unreadable_result_files_are_named(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"{path}.*{error}"):
        read_results(path)
