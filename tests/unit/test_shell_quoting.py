"""Shell commands are built with quoting only; hostile values reach no shell and no git option."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from lemfleet.roles.llama_sources import git_source
from lemfleet.roles.model_fetch import download_script
from lemfleet.roles.settings import SettingsError
from tests.unit.shell_scan import scan

ROLES = Path(__file__).resolve().parents[2] / "roles"

# Unquoted interpolations in modules other work owns, counted per (module, expression): values lemfleet makes
# itself (build ids, paths under /opt/lemfleet, validated integers), left to their owners to quote. The test
# fails when a module gains one beyond these counts.
KNOWN: Counter[tuple[str, str]] = Counter(
    {
        # snapshot_script takes ``build`` and ``model`` as shell words by contract; ``good`` is a Layout path.
        ("roles/transaction.py", "build"): 1,
        ("roles/transaction.py", "model"): 1,
        ("roles/transaction.py", "good"): 1,
    }
)


def unquoted_beyond(root: Path, package: str, known: Counter[tuple[str, str]]) -> list[str]:
    """The scan's findings under ``root`` beyond the ``known`` counts."""
    findings = scan(root, root, package)
    found = Counter((f.path, f.expression) for f in findings)
    return [str(f) for f in findings if found[(f.path, f.expression)] > known[(f.path, f.expression)]]


def test_command_builders_quote_every_interpolation():
    new = unquoted_beyond(ROLES, "lemfleet.roles", KNOWN)
    assert not new, "unquoted values in shell commands (wrap them in quote(...)):\n" + "\n".join(new)


LEMFLEET = ROLES.parent / "lemfleet"
# The controller's own command builders (status's probe, the test bed's recorded tools): section names and
# commands lemfleet writes itself, and a recorded exit status.
KNOWN_CONTROLLER: Counter[tuple[str, str]] = Counter(
    {
        ("lemfleet/api/status.py", "name"): 1,
        ("lemfleet/api/status.py", "cmd"): 1,
        ("lemfleet/testbed/recorded_gpu.py", "found[kind][1]"): 1,
        ("lemfleet/testbed/recorded_gpu.py", "tool"): 1,
    }
)


def test_controller_command_builders_quote_every_interpolation():
    """The same rule for the commands the controller builds (status, Prometheus, the test bed), not only the steps."""
    new = unquoted_beyond(LEMFLEET, "lemfleet", KNOWN_CONTROLLER)
    assert not new, "unquoted values in shell commands (wrap them in quote(...)):\n" + "\n".join(new)


def test_the_scan_finds_an_unquoted_value(tmp_path):
    """The scanner itself: an unquoted value is reported, a quoted one is not."""
    (tmp_path / "mod.py").write_text(
        "from shlex import quote as q\n"
        "def op(path, mode):\n"
        "    safe = q(path)\n"
        "    yield f'rm -f {safe} {q(path)}'\n"
        "    yield f'chmod {mode} {q(path)}'\n"
        "def download_script(url):\n"
        "    return f'echo \"download of {url} failed\"'\n"
    )
    findings = [(f.line, f.expression) for f in scan(tmp_path, tmp_path, "fake")]
    assert findings == [(5, "mode"), (7, "url")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_download_script_runs_nothing_from_the_url(tmp_path):
    """The URL's ``$(...)`` and backticks stay text in the failure message (the port is closed on loopback)."""
    marker = tmp_path / "pwned"
    url = f"http://127.0.0.1:9/$(touch {marker})`touch {marker}`'\";.gguf"
    script = download_script(url, str(tmp_path / "m.gguf"), "0" * 64, None)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 1
    assert not marker.exists()
    assert f"download of {url} failed" in proc.stderr


def test_download_script_refuses_a_url_that_is_not_http():
    with pytest.raises(ValueError, match="not http"):
        download_script("file:///etc/shadow", "/tmp/m.gguf", "0" * 64, None)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_url_cannot_become_a_git_option(tmp_path):
    marker = tmp_path / "pwned"
    settings = {
        "llama_cpp_git_url": f"--upload-pack=touch {marker}",
        "llama_cpp_git_ref": "b1",
        "llama_cpp_git_check_ref": True,
    }
    with pytest.raises(SettingsError, match="llama_cpp_git_url"):
        git_source(settings)
    assert not marker.exists()
