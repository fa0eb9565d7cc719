"""``lemfleet``'s argument handling and ``lemfleet report``: errors people see, exit codes.

Runs against real files only; the smoke runs against a real server are in test_smoke_live.py.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lemfleet.cli import SUBCOMMANDS, build_parser, main
from lemfleet.smoke_cli import load_api_key

ROOT = Path(__file__).resolve().parents[2]
RECORDED = Path(__file__).parent / "fixtures" / "llama-server" / "smoke-results.json"


def test_console_script_points_at_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lemfleet"] == "lemfleet.cli:main"
    done = subprocess.run([sys.executable, "-m", "lemfleet.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for name in SUBCOMMANDS:
        assert name in done.stdout


def test_every_subcommand_has_help_arguments_and_run() -> None:
    parser = build_parser()
    for name in SUBCOMMANDS:
        assert parser.parse_args(
            [name, "x"] if name in ("report", "rollout", "rollback", "status", "prometheus", "remove") else [name]
        ).run


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["smoke", "--concurrency", "0", "http://h"], "argument --concurrency: '0' is not valid"),
        (["smoke", "--timeout", "-1", "http://h"], "argument --timeout: '-1' is not valid"),
        (
            ["smoke", "--api-key-file", "f", "--api-key-env", "V", "http://h"],
            "argument --api-key-env: not allowed with argument --api-key-file",
        ),
        (["report"], "the following arguments are required: JSON"),
    ],
)
def test_argument_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["smoke"], "give at least one URL or --inventory INV.py"),
        (["smoke", "--load", "5", "http://a", "http://b"], "--load takes exactly one endpoint"),
        (["smoke", "--api-key-file", "/nonexistent/key", "http://h"], "cannot read API key file"),
        (["smoke", "--api-key-env", "LEMFLEET_TEST_UNSET", "http://h"], "LEMFLEET_TEST_UNSET is"),
        (["smoke", "--inventory", "/nonexistent/inv.py"], "inventory file /nonexistent/inv.py"),
        (["report", "/nonexistent/smoke.json"], "cannot read /nonexistent/smoke.json"),
    ],
)
def test_setup_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lemfleet {argv[0]}: error: ") and message in err
    assert err.count("\n") == 1


def test_api_key_file_is_read_as_llama_server_reads_it(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("# llama-server --api-key-file format\n\nfirst-key\nsecond\n")
    assert load_api_key(key_file=key_file) == "first-key"
    key_file.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="holds no key") as raised:
        load_api_key(key_file=key_file)
    assert "only a comment" not in str(raised.value)
    # llama-server keeps the spaces, so no request could match this key: refused, naming the line only.
    key_file.write_text("#\n  padded-key  \n")
    with pytest.raises(ValueError, match="line 2: a key must be printable ASCII without spaces") as raised:
        load_api_key(key_file=key_file)
    assert "padded-key" not in str(raised.value)


def test_api_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_KEY", " secret ")
    assert load_api_key(env_var="FLEET_KEY") == "secret"
    assert load_api_key() is None


def test_report_prints_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(RECORDED)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## lemfleet smoke report\n")
    assert "| cpu-01 | cpu | tiny-test |" in out


def test_report_writes_the_out_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.md"
    assert main(["report", str(RECORDED), "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert "1 of 3 hosts passed." in out.read_text()
