"""lemfleet's auth rules held against the pinned llama-server itself.

- The managed-flag list (roles/server_flags.py) names every alias and variable ``llama-server --help``
  gives for each flag lemfleet sets, so no spelling of ``--host`` or ``--api-key-file`` slips through
  ``server_extra_args``.
- A key file of comments really turns auth off (the reason lemfleet refuses one), and the smoke
  check's auth step catches a server in that state.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from lemfleet.api_keys import key_problems
from lemfleet.roles.server_flags import MANAGED_FLAGS
from lemfleet.smoke import smoke_check
from tests.integration.test_smoke_live import start_llama_server, stop, wait_until_healthy

ENTRY_FLAGS = re.compile(r"^(-[\w-]+(?:,\s+-[\w-]+)*)")
ENV = re.compile(r"\(env: ([A-Z_0-9]+)\)")


def help_entries(binary: Path) -> list[tuple[set[str], set[str]]]:
    """(flags, variables) of each option ``llama-server --help`` lists."""
    text = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    entries: list[tuple[set[str], set[str]]] = []
    for line in text.splitlines():
        match = ENTRY_FLAGS.match(line)
        if match:
            entries.append(({f.strip() for f in match.group(1).split(",")}, set()))
        if entries:
            entries[-1][1].update(ENV.findall(line))
    return entries


def test_managed_flags_name_every_alias_and_variable_of_the_pinned_server(llama_server_bin: Path) -> None:
    entries = help_entries(llama_server_bin)
    assert len(entries) > 100, "llama-server --help was not parsed"
    for managed in MANAGED_FLAGS:
        found = [(flags, env) for flags, env in entries if managed.flags[-1] in flags]
        assert len(found) == 1, f"{managed.flags[-1]} is listed {len(found)} times by --help"
        flags, env = found[0]
        assert flags == set(managed.flags), f"--help lists {sorted(flags)}, roles/server_flags.py {managed.flags}"
        assert managed.env in env, f"{managed.flags[-1]}: --help names {sorted(env)}, not {managed.env}"


def test_a_key_file_of_comments_serves_everyone_and_the_smoke_check_says_so(
    llama_server_bin: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    content = "# the key goes here\n"
    assert key_problems(content, "keys"), "lemfleet would have deployed this key file"
    server = start_llama_server(llama_server_bin, tiny_gguf, tmp_path, key_content=content)
    try:
        wait_until_healthy(server)
        assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 200  # auth is off
        result = smoke_check(server.url, api_key="a-key-the-operator-meant-to-set", health_timeout=30)
        steps = {step.name: step for step in result.steps}
        assert steps["auth"].status == "failed", steps["auth"]
        assert "authentication is off" in steps["auth"].message
        assert not result.ok
    finally:
        stop(server)
