"""The git source pinned by commit: the controller checks the tag, each clone is checked after cloning.

A real repository is served over loopback HTTP (git's dumb protocol, ``git update-server-info``),
so ``git ls-remote`` and ``git clone`` run as they would against a forge. The pure parsing checks:
``tests/unit/test_git_pin.py``.
"""

from __future__ import annotations

import functools
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operation import add_op
from pyinfra.context import ctx_host, ctx_state

from lemfleet.roles.git_pin import check_script, pinned_checkout
from lemfleet.roles.llama_sources import git_source
from lemfleet.roles.settings import SettingsError

TAG = "b1"
GIT = ["git", "-c", "user.name=lemfleet", "-c", "user.email=lemfleet@example.invalid", "-c", "init.defaultBranch=main"]


@dataclass
class Remote:
    url: str
    bare: Path
    work: Path

    def head(self) -> str:
        return _git("rev-parse", "HEAD", cwd=self.work)

    def move_tag(self) -> str:
        """Re-point the tag at a new commit, as a re-pushed or tampered tag would be; return that commit."""
        _git("commit", "--allow-empty", "-q", "-m", "moved", cwd=self.work)
        _git("tag", "-f", "-a", TAG, "-m", "moved", cwd=self.work)
        _git("push", "-q", "-f", "origin", "main", f"refs/tags/{TAG}", cwd=self.work)
        _git("update-server-info", cwd=self.bare)
        return self.head()


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    bare, work = tmp_path / "srv" / "llama.cpp.git", tmp_path / "work"
    bare.parent.mkdir()
    _git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    _git("init", "-q", str(work), cwd=tmp_path)
    (work / "CMakeLists.txt").write_text("project(llama.cpp)\n")
    _git("add", "CMakeLists.txt", cwd=work)
    _git("commit", "-q", "-m", "release", cwd=work)
    _git("tag", "-a", TAG, "-m", "release", cwd=work)  # annotated, as release tags often are
    _git("remote", "add", "origin", str(bare), cwd=work)
    _git("push", "-q", "origin", "main", f"refs/tags/{TAG}", cwd=work)
    _git("update-server-info", cwd=bare)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(bare.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Remote(f"http://127.0.0.1:{server.server_address[1]}/llama.cpp.git", bare, work)
    server.shutdown()
    server.server_close()


def _settings(remote: Remote, commit: str | None, check: bool = True) -> dict[str, Any]:
    return {
        "llama_cpp_git_url": remote.url,
        "llama_cpp_git_ref": TAG,
        "llama_cpp_git_commit": commit,
        "llama_cpp_git_check_ref": check,
    }


def test_the_pinned_tag_is_accepted_and_names_the_build(remote: Remote) -> None:
    commit = remote.head()
    source = git_source(_settings(remote, commit))
    assert (source.git_ref, source.git_commit, source.source_id) == (TAG, commit, f"git-{TAG}-{commit[:12]}")


def test_a_moved_tag_is_refused_before_any_host(remote: Remote) -> None:
    pinned = remote.head()
    moved = remote.move_tag()
    with pytest.raises(SettingsError, match=f"llama_cpp_git_ref='{TAG}' is commit {moved} .* not llama_cpp_git_commit"):
        git_source(_settings(remote, pinned))


def test_an_unpinned_tag_says_which_commit_to_check(remote: Remote) -> None:
    with pytest.raises(SettingsError, match=f"llama_cpp_git_commit is not set.*says it is commit {remote.head()}"):
        git_source(_settings(remote, None))
    with pytest.raises(SettingsError, match="llama_cpp_git_commit is not set; accepted: the full commit id"):
        git_source(_settings(remote, None, check=False))


def _clone(remote: Remote, dest: Path) -> None:
    # As the hosts clone (git.repo with branch=<tag>), less --depth 1, which git's dumb HTTP cannot serve.
    subprocess.run(["git", "clone", "-q", "--branch", TAG, remote.url, str(dest)], check=True, capture_output=True)


def test_the_clone_is_checked_after_cloning(remote: Remote, tmp_path: Path) -> None:
    pinned = remote.head()
    good = tmp_path / "good"
    _clone(remote, good)
    assert subprocess.run(["sh", "-c", check_script(str(good), pinned, TAG)], capture_output=True).returncode == 0
    assert (good / "CMakeLists.txt").exists()
    # The tag moved after the controller's check: the host's clone is caught and removed.
    remote.move_tag()
    bad = tmp_path / "bad"
    _clone(remote, bad)
    done = subprocess.run(["sh", "-c", check_script(str(bad), pinned, TAG)], capture_output=True, text=True)
    assert done.returncode == 1
    assert f"is at commit {remote.head()}, not the pinned llama_cpp_git_commit={pinned} (tag {TAG})" in done.stderr
    assert not bad.exists()


def test_the_check_runs_only_when_the_clone_is_not_yet_proven(remote: Remote, tmp_path: Path) -> None:
    pinned = remote.head()
    clone = tmp_path / "clone"
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    connect_all(state)
    host = inventory.get_host("@local")

    def commands() -> list[str]:
        with ctx_state.use(state), ctx_host.use(host):
            meta = add_op(state, pinned_checkout, path=str(clone), commit=pinned, ref=TAG)[host]
            data = state.get_op_data_for_host(host, meta._hash)
            return [str(command) for command in data.command_generator()]

    assert commands() == [check_script(str(clone), pinned, TAG)]  # not cloned yet: check after the clone
    _clone(remote, clone)
    host.disconnect()
    state = State(inventory, Config())
    connect_all(state)
    host = inventory.get_host("@local")
    assert commands() == []
    host.disconnect()
