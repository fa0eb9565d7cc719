"""An exposed server never ends up without working auth: keys and extra arguments checked before any host.

llama-server loads every line of its key file that is not empty and does not start with '#', verbatim,
and turns auth off when that list is empty. These tests hold lemfleet's checks to those rules; the
live tests (test_auth_live.py) hold the rules to the pinned llama-server itself.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lemfleet.api_keys import KEY, MIN_KEY_LENGTH, first_key, key_problems, parse_key_file
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.server import api_keys, render_env
from lemfleet.roles.server_flags import MANAGED_FLAGS, env_problems, extra_args_problems
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate
from tests.unit.test_server_templates import FACTS

GOOD = "k3y-for-tests-0123456789"
EXPOSED = {"server_host": "0.0.0.0"}


def refused(data: dict[str, object]) -> str:
    with pytest.raises(SettingsError) as raised:
        validate(data)
    return str(raised.value)


def test_key_file_is_read_as_llama_server_reads_it() -> None:
    content = f"# comment\n\n{GOOD}\n  # indented\n{GOOD}-2\r\n   \n#\n"
    assert parse_key_file(content) == [GOOD, "  # indented", f"{GOOD}-2\r", "   "]
    assert first_key(content) == GOOD
    assert first_key("# only\n") is None
    assert first_key(None) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("# only a comment\n", "holds no key"),
        ("\n\n", "holds no key"),
        ("", "holds no key"),
        ("   \n", "line 1 holds only whitespace"),
        (f"# keys\n  # not a comment\n{GOOD}\n", "line 2 looks like a comment"),
        (f"{GOOD}\r\n", "line 1 holds a carriage return"),
        (f"{GOOD} trailing\n", "line 1 holds whitespace"),
        (f"{GOOD}\tx\n", "line 1 holds whitespace"),
        (f"{GOOD}\x00\n", "line 1 holds a control character"),
        (f"{GOOD}é\n", "line 1 holds a non-ASCII character"),
        ("short-key\n", f"line 1 holds a key of 9 characters; accepted: at least {MIN_KEY_LENGTH}"),
    ],
)
def test_key_lists_that_would_not_work_are_refused(content: str, expected: str) -> None:
    problems = key_problems(content, "server_api_key_file='keys'")
    assert problems and expected in problems[0], problems
    assert all(GOOD not in problem for problem in problems), "a message echoed a key"


def test_a_good_key_file_passes_and_rotation_keeps_several_keys() -> None:
    assert key_problems(f"# old key, remove after rotation\n{GOOD}\n{GOOD}-new\n", "f") == []


@given(st.text(max_size=200))
def test_any_content_that_passes_gives_llama_server_only_sendable_keys(content: str) -> None:
    if key_problems(content, "f"):
        return
    keys = parse_key_file(content)
    assert keys, "content passed but llama-server would load no key (auth off)"
    assert all(KEY.fullmatch(key) and len(key) >= MIN_KEY_LENGTH for key in keys)


@pytest.mark.parametrize("blank", ["", " ", "   ", "\t", "\n"])
def test_a_blank_server_api_key_is_refused_before_any_host(blank: str) -> None:
    message = refused({**EXPOSED, "server_api_key": blank})
    assert "server_api_key" in message


def test_a_key_starting_with_a_hash_would_be_a_comment() -> None:
    assert "read it as a comment" in refused({**EXPOSED, "server_api_key": "#" + GOOD})


def test_a_key_that_is_not_a_string_is_refused_without_echoing_it() -> None:
    message = refused({**EXPOSED, "server_api_key": 1234567890123456789})
    assert "of type int" in message and "1234567890123456789" not in message


def test_a_comment_only_key_file_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# the key goes here\n")
    message = refused({**EXPOSED, "server_api_key_file": str(keys)})
    assert f"server_api_key_file={str(keys)!r} holds no key" in message
    assert "turns authentication off" in message


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    message = refused({**EXPOSED, "server_api_key_file": str(tmp_path / "nope")})
    assert "cannot be read (No such file or directory)" in message


def test_a_good_key_is_written_as_given(tmp_path: Path) -> None:
    assert validate({**EXPOSED, "server_api_key": GOOD})["server_api_key"] == GOOD
    assert api_keys({"server_api_key": GOOD}) == GOOD + "\n"
    keys = tmp_path / "keys"
    keys.write_text(f"# rotation\n{GOOD}\n")
    validate({**EXPOSED, "server_api_key_file": str(keys)})
    assert api_keys({"server_api_key_file": str(keys)}) == f"# rotation\n{GOOD}\n"


@pytest.mark.parametrize("flag", [flag for managed in MANAGED_FLAGS for flag in managed.flags])
def test_every_managed_flag_is_refused_in_extra_args_in_both_forms(flag: str) -> None:
    for items in ([flag, "1"], [f"{flag}=1"], ["--jinja", flag]):
        message = refused({"server_extra_args": items})
        assert f"sets {flag}" in message or f"/{flag}" in message, message
        assert "which lemfleet manages" in message


def test_extra_args_that_override_nothing_pass() -> None:
    args = ["--jinja", "--cache-reuse", "256", "--no-webui", "--temp=0.7"]
    assert validate({"server_extra_args": args})["server_extra_args"] == args


@pytest.mark.parametrize("item", ["--jinja\nLLAMA_ARG_HOST=0.0.0.0", "--jinja --port 1", "--x\ty", "--a\rb", "--a\x00"])
def test_extra_args_cannot_smuggle_lines_or_words(item: str) -> None:
    assert "holds whitespace or a control character" in refused({"server_extra_args": [item]})


def test_an_api_key_in_extra_args_is_not_echoed() -> None:
    message = refused({"server_extra_args": [f"--api-key={GOOD}"]})
    assert GOOD not in message and "sets --api-key" in message


def test_managed_flag_variables_are_refused_in_the_service_environment() -> None:
    assert env_problems({"HIP_VISIBLE_DEVICES": "0"}, "plan") == []
    (problem,) = env_problems({"LLAMA_ARG_HOST": "0.0.0.0", "HIP_VISIBLE_DEVICES": "0"}, "plan")
    assert problem.startswith("plan sets LLAMA_ARG_HOST")
    assert extra_args_problems(["--jinja"]) == []


def test_a_plan_environment_that_sets_a_managed_flag_is_never_rendered() -> None:
    plan = plan_host(FACTS, validate({}), ModelInfo("tiny", 5_000_000))
    assert "HIP_VISIBLE_DEVICES" in render_env(
        replace(plan, run_env={"HIP_VISIBLE_DEVICES": "0"}), unit_name="u", model_path="/m.gguf", extra_args=[]
    )
    with pytest.raises(SettingsError, match="sets LLAMA_API_KEY, the variable of a flag lemfleet manages"):
        render_env(replace(plan, run_env={"LLAMA_API_KEY": "x"}), unit_name="u", model_path="/m.gguf", extra_args=[])
