"""The GPU plan and the drivers plan read the same platform table (roles/platforms.py).

Each case changes one row of the table and checks that both plans follow it: a fact kept in two
places would let one plan go on with the old value. The hosts are recorded ones
(tests/fixtures/gpu/hosts.py); the drivers plan is made for the backend the GPU plan chose.
"""

from __future__ import annotations

import re

import pytest

from lemfleet.roles.drivers import DriverPlan, DriverPlanError, plan_drivers, target_from_facts
from lemfleet.roles.gpu_plan import GpuChoice, choose_gpu
from lemfleet.roles.hostinfo import HostFacts
from lemfleet.roles.platforms import RELEASES, os_release, rocm_route, vulkan_headers_ok
from lemfleet.roles.settings import SettingsError
from tests.fixtures.gpu.hosts import DEBIAN_13, DEBIAN_SID, UBUNTU_2404, Release, scenario_host

AMD = "rx7900xtx"  # gfx1100: ROCm's libraries support it, so only the release decides hip or vulkan


def plans(release: Release, scenario: str = AMD) -> tuple[GpuChoice, HostFacts, DriverPlan]:
    facts = scenario_host(scenario, release)
    choice = choose_gpu(facts, {})
    return choice, facts, plan_drivers(target_from_facts(facts, choice.backend), {})


def key(release: Release) -> tuple[str, str]:
    return os_release(release.os_id, release.version, release.codename)


def test_recorded_hosts_plan_from_the_table() -> None:
    choice, _, drivers = plans(DEBIAN_SID)
    hip = RELEASES[key(DEBIAN_SID)].hip
    assert (choice.backend, drivers.source) == ("hip", "debian")
    assert any(f"(HIP {hip} in sid)" in reason for reason in choice.reasons)
    assert any(f"(HIP {hip} in sid," in reason for reason in drivers.reasons)
    choice, _, drivers = plans(DEBIAN_13)
    headers = RELEASES[key(DEBIAN_13)].vulkan_headers
    assert (choice.backend, drivers.backend) == ("vulkan", "vulkan")
    assert any(f"Vulkan headers {headers}," in reason for reason in choice.reasons)
    assert any(f"headers {headers} (>=" in reason for reason in drivers.reasons)


def test_a_new_enough_hip_in_a_row_moves_both_plans_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RELEASES, key(DEBIAN_13), RELEASES[key(DEBIAN_13)]._replace(hip="6.4.9"))
    choice, _, drivers = plans(DEBIAN_13)
    assert choice.backend == "hip"
    assert any("(HIP 6.4.9 in 13)" in reason for reason in choice.reasons)
    assert (drivers.backend, drivers.source) == ("hip", "debian")
    assert any("(HIP 6.4.9 in 13," in reason for reason in drivers.reasons)


def test_a_too_old_hip_in_a_row_takes_both_plans_off_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RELEASES, key(DEBIAN_SID), RELEASES[key(DEBIAN_SID)]._replace(hip="6.0.2"))
    assert rocm_route(key(DEBIAN_SID)) == (False, "Debian sid packages HIP 6.0.2, too old for ggml-hip (>= 6.1)")
    choice, facts, _ = plans(DEBIAN_SID)
    assert choice.backend == "vulkan"
    with pytest.raises(DriverPlanError, match=re.escape("its HIP is 6.0.2 and llama.cpp's HIP backend needs 6.1")):
        plan_drivers(target_from_facts(facts, "hip"), {})


def test_old_vulkan_headers_in_a_row_refuse_vulkan_in_both_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RELEASES, key(DEBIAN_13), RELEASES[key(DEBIAN_13)]._replace(vulkan_headers="1.3.250"))
    assert vulkan_headers_ok(key(DEBIAN_13))[0] is False
    facts = scenario_host(AMD, DEBIAN_13)
    with pytest.raises(SettingsError, match=re.escape("Debian 13 ships Vulkan headers 1.3.250, too old")):
        choose_gpu(facts, {"gpu_backend": "vulkan"})
    with pytest.raises(DriverPlanError, match=re.escape("its Vulkan headers (1.3.250) are older than the 1.3.261")):
        plan_drivers(target_from_facts(facts, "vulkan"), {})


def test_a_codename_in_a_row_is_the_suite_of_both_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RELEASES, key(UBUNTU_2404), RELEASES[key(UBUNTU_2404)]._replace(codename="nextsuite"))
    choice, _, drivers = plans(UBUNTU_2404, "780m+rx7600s")  # no ROCm yet: the drivers step adds AMD's repository
    assert any("(repo.radeon.com, nextsuite)" in reason for reason in choice.reasons)
    assert {suite for source in drivers.sources for suite in source.suites} == {"nextsuite"}


def test_a_release_newer_than_every_row_of_its_os_is_taken_to_have_new_vulkan_headers() -> None:
    assert vulkan_headers_ok(("debian", "14")) == (True, "Debian 14 ships Vulkan headers newer than 1.3.261")
    assert vulkan_headers_ok(("ubuntu", "20.04"))[0] is None
