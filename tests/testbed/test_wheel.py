"""lemfleet as another project uses it: the wheel, in fresh venvs outside the checkout, on a new test-bed host.

The wheel is built from the checkout and installed, with the verify extra, into two
venvs under a temporary directory: one with pyinfra's lowest supported version (the
lower bound in pyproject.toml), one with the newest. From an empty directory that
holds only a two-line ``deploy.py`` calling the packaged deploy and an inventory
whose host data carries the settings:

1. the lowest pyinfra deploys to a freshly booted host;
2. the newest refuses a bad setting, naming it, before changing anything;
3. the newest reruns the deploy and changes nothing;
4. ``lemfleet plan`` and the verify suite (``pytest --pyargs lemfleet.verify``) run
   from the wheel and pass.

No process here can import the checkout: each runs from the empty directory with
the venv's own interpreter, and the first asserts where ``lemfleet`` comes from.
The llama-server build comes from the controller's build cache, which the
``fleet`` deploys fill, so the deploy takes minutes, not a compile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.testbed.paths import KNOWN_HOSTS, PROXY_URL, SSH_CONFIG, SSH_KEY
from tests.testbed.conftest import PROJECT

TWO_LINE_DEPLOY = "from lemfleet.deploy import deploy_lemfleet\ndeploy_lemfleet()\n"


def lowest_pyinfra() -> str:
    """The lower bound of pyinfra in pyproject.toml's dependencies, e.g. ``3.9``."""
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if re.match(r"pyinfra\b", d)]
    found = re.search(r">=\s*([\d.]+)", spec)
    assert found, f"pyinfra has no lower bound in pyproject.toml: {spec!r}"
    return found.group(1)


def run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``command`` from ``cwd`` with an environment that points at nothing in the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Venv:
    path: Path

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(PROJECT)], out)
    assert built.returncode == 0, built.stderr[-3000:]
    (found,) = out.glob("lemfleet-*.whl")
    return found


def make_venv(where: Path, wheel: Path, pyinfra: str | None) -> Venv:
    venv = Venv(where)
    made = run([sys.executable, "-m", "venv", str(where)], where.parent)
    assert made.returncode == 0, made.stderr
    pins = [f"pyinfra=={pyinfra}"] if pyinfra else []
    installed = run([venv.bin("pip"), "install", "-q", f"{wheel}[verify]", *pins], where.parent, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def lowest(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return make_venv(tmp_path_factory.mktemp("venvs") / "lowest", wheel, lowest_pyinfra())


@pytest.fixture(scope="module")
def newest(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return make_venv(tmp_path_factory.mktemp("venvs") / "newest", wheel, None)


@pytest.fixture(scope="module")
def host(bed: list[testbed.HostRecord]) -> Iterator[testbed.HostRecord]:
    """A freshly booted host beside the session's bed, removed afterwards."""
    (rec,) = testbed.add(1)
    yield rec
    testbed.remove(rec.name)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, host: testbed.HostRecord, tiny_model: Path) -> Path:
    """Another project's directory: a two-line deploy.py and an inventory, nothing else."""
    where = tmp_path_factory.mktemp("project")
    data = {
        "ssh_hostname": host.address,
        "ssh_user": "root",
        "ssh_key": str(SSH_KEY),
        "ssh_known_hosts_file": str(KNOWN_HOSTS),
        "ssh_strict_host_key_checking": "yes",
        "apt_proxy": PROXY_URL,
        "model_source": "local",
        "model_path": str(tiny_model),
    }
    (where / "deploy.py").write_text(TWO_LINE_DEPLOY)
    (where / "inventory.py").write_text(f"hosts = [({host.name!r}, {data!r})]\n")
    return where


def totals(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    return dict(json.loads(result.stdout[result.stdout.find("{") :])["results"]["totals"])


def test_the_wheel_ships_the_package_and_nothing_generic(newest: Venv, project: Path) -> None:
    where = run([newest.bin("python"), "-c", "import lemfleet; print(lemfleet.__file__)"], project)
    assert where.stdout.strip().startswith(str(newest.path)), where.stdout + where.stderr
    site = Path(where.stdout.strip()).parents[1]
    assert not (site / "roles").exists() and not (site / "tests").exists()
    assert sorted(p.name for p in (site / "lemfleet" / "templates").glob("*.j2"))
    assert (site / "lemfleet" / "verify" / "test_fleet.py").is_file()


def test_the_lowest_pyinfra_deploys_a_fresh_host(lowest: Venv, project: Path) -> None:
    version = run([lowest.bin("python"), "-c", "import pyinfra.version as v; print(v.__version__)"], project)
    assert version.stdout.strip().startswith(lowest_pyinfra()), version.stdout + version.stderr
    deployed = run([lowest.bin("pyinfra"), "-y", "--json", "inventory.py", "deploy.py"], project, timeout=3600)
    assert deployed.returncode == 0, (deployed.stdout + deployed.stderr)[-4000:]
    assert totals(deployed)["error"] == 0 and totals(deployed)["success"] > 0


def test_a_bad_setting_stops_the_packaged_deploy_before_any_change(newest: Venv, project: Path) -> None:
    bad = run([newest.bin("pyinfra"), "-y", "inventory.py", "deploy.py", "--data", "server_port=70000"], project)
    assert bad.returncode != 0
    assert "server_port=70000 is not valid; accepted: an integer from 1 to 65535" in bad.stdout + bad.stderr
    assert "Beginning operation run" not in bad.stdout + bad.stderr


def test_the_newest_pyinfra_reruns_and_changes_nothing(newest: Venv, project: Path) -> None:
    rerun = run([newest.bin("pyinfra"), "-y", "--json", "inventory.py", "deploy.py"], project, timeout=1800)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    changed = totals(rerun)
    assert changed["success"] == 0 and changed["error"] == 0, changed


def test_lemfleet_plan_runs_from_the_wheel(newest: Venv, project: Path, host: testbed.HostRecord) -> None:
    planned = run([newest.bin("lemfleet"), "plan", "inventory.py", "--json", "-"], project)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    (row,) = json.loads(planned.stdout)
    assert row["host"] == host.name and row["ok"] and row["backend"] == "cpu", row


def test_the_verify_suite_runs_from_the_wheel(newest: Venv, project: Path, host: testbed.HostRecord) -> None:
    command = [newest.bin("pytest"), "--pyargs", "lemfleet.verify", f"--hosts=ssh://{host.name}"]
    verified = run([*command, f"--ssh-config={SSH_CONFIG}", "-p", "no:cacheprovider", "-q"], project)
    assert verified.returncode == 0, verified.stdout[-4000:] + verified.stderr[-2000:]
    assert re.search(r"\d+ passed", verified.stdout) and "failed" not in verified.stdout
