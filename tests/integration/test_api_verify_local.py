"""The verify suite run for real against this machine, read back from its JUnit by the API.

Machine-dependent: it checks whatever lemfleet deployed on this host (on CI machines, nothing) and would
query the recorded endpoint, so it is an integration test rather than a unit test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lemfleet import api
from lemfleet.api.checks import read_junit


def test_the_verify_suites_junit_becomes_a_host_by_check_table(tmp_path: Path) -> None:
    # The real suite against this machine, which lemfleet never deployed: every check fails, saying why.
    junit = tmp_path / "verify.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "lemfleet.verify", "-p", "no:cacheprovider", "-q",
         "--hosts=local://", f"--junitxml={junit}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    verified = api.FleetVerify(read_junit(junit))
    assert verified.hosts == ["local"]
    assert not verified.ok and len(verified.failures()) == len(verified.checks) >= 10
    assert all("deployed.json is missing" in c.message for c in verified.failures())
    header = str(verified).splitlines()[0].split()
    assert header[0] == "HOST" and "ENDPOINT_CHAT" in header
    assert "fail" in verified._repr_html_()
