"""The packaged deploy is this repo's deploy.py: one copy of the step order, importable without running it."""

from __future__ import annotations

from pathlib import Path

import lemfleet.deploy
from lemfleet.deploy import deploy_lemfleet

ROOT = Path(__file__).resolve().parents[2]


def test_the_packaged_deploy_is_the_repos_deploy_py() -> None:
    assert Path(lemfleet.deploy.__file__).resolve() == (ROOT / "deploy.py").resolve()


def test_importing_it_defines_the_deploy_without_running_it() -> None:
    # Run, it would need a pyinfra host context and fail here; imported, it only defines the deploy.
    assert callable(deploy_lemfleet)
