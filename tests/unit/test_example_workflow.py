"""The example CI workflow parses, and every command it runs exists in this project.

Each shell command in a ``run:`` block is checked against the real thing: ``lemfleet`` lines
are parsed by lemfleet's own argument parser, ``pyinfra`` lines by pyinfra's click command (in
a child process, since pyinfra_cli patches the process for gevent), ``pytest`` options against
``pytest --help`` with the installed plugins, and paths must exist in the repository.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from lemfleet.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "github-actions-deploy.yml"
SEPARATORS = {"&&", "||", ";", "|"}
REDIRECTS = {">", ">>", "<", "2>", "2>&1"}


def _workflow() -> dict[Any, Any]:
    document = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(document, dict)
    return document


def _steps() -> list[dict[str, Any]]:
    return [step for job in _workflow()["jobs"].values() for step in job["steps"]]


def _commands() -> list[tuple[list[str], dict[str, str]]]:
    """Every simple command of every ``run:`` block, with the env it runs under."""
    workflow_env = _workflow().get("env", {})
    commands = []
    for step in _steps():
        script = step.get("run")
        if not script:
            continue
        env = {**workflow_env, **step.get("env", {})}
        script = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", script.replace("\\\n", " "))
        for line in script.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            words: list[str] = []
            for token in [*shlex.split(line), ";"]:
                if token in SEPARATORS:
                    if words:
                        commands.append((words, env))
                    words = []
                elif token in REDIRECTS:
                    words.append("<redirect>")
                else:
                    words.append(token)
    return [(words[: words.index("<redirect>")] if "<redirect>" in words else words, env) for words, env in commands]


def _by_program(program: str) -> list[tuple[list[str], dict[str, str]]]:
    return [(words, env) for words, env in _commands() if words[0] == program]


def test_workflow_parses_with_triggers_and_artifacts() -> None:
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    assert isinstance(triggers, dict) and {"workflow_dispatch", "push"} <= set(triggers)
    uploads = [s for s in _steps() if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["with"]["path"] == "reports/"
    assert uploads[0]["if"] == "always()"


def test_every_program_exists() -> None:
    project = {"lemfleet", "pyinfra", "pytest"}
    # `python` is the runner's, from actions/setup-python (Debian has only python3 unless python-is-python3).
    if any(str(step.get("uses", "")).startswith("actions/setup-python@") for step in _steps()):
        project.add("python")
    for words, _ in _commands():
        program = words[0]
        assert program in project or shutil.which(program), f"{program} is not a command here"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "lemfleet" in scripts


def test_lemfleet_commands_parse_and_name_real_files() -> None:
    lines = _by_program("lemfleet")
    assert {words[1] for words, _ in lines} == {"smoke", "report"}
    for words, env in lines:
        args = build_parser().parse_args(words[1:])
        if getattr(args, "inventory", None):
            assert (ROOT / args.inventory).is_file(), args.inventory
        if getattr(args, "api_key_env", None):
            assert args.api_key_env in env, f"{args.api_key_env} is not set for this step"


def test_pyinfra_commands_parse_with_pyinfras_own_cli() -> None:
    lines = _by_program("pyinfra")
    assert any("--serial" in words for words, _ in lines)
    assert all("--limit" in words for words, _ in lines)
    for words, _ in lines:
        check = "import json, sys; from pyinfra_cli.cli import cli; "
        check += "print(json.dumps(cli.make_context('pyinfra', sys.argv[1:]).params['operations']))"
        done = subprocess.run([sys.executable, "-c", check, *words[1:]], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-500:]
        inventory, operations = words[1], json.loads(done.stdout)
        for path in [inventory, *operations]:
            if not (ROOT / path).is_file():
                pytest.fail(f"`{shlex.join(words)}` names {path}, which the project lacks")


def test_pytest_runs_the_shipped_suite_with_known_options() -> None:
    [(words, _)] = _by_program("pytest")
    assert (ROOT / words[1]).is_dir() and words[1] == "tests/verify"
    options = {word.split("=", 1)[0] for word in words if word.startswith("--")}
    assert "--hosts" in options
    help_text = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    for option in options:
        assert re.search(rf"(^\s+|, ){re.escape(option)}[=\s,]", help_text, re.M), option
