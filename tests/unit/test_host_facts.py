"""The host probe's parsers, on output recorded from a real test-bed host."""

from __future__ import annotations

from pathlib import Path

from lemfleet.roles.detect import facts_from_sections
from lemfleet.roles.facts.host import (
    parse_cpuinfo,
    parse_lscpu_cores,
    parse_os_release,
    probe_command,
    split_sections,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "host"


def sections(name: str) -> dict[str, list[str]]:
    return split_sections((FIXTURES / name).read_text().splitlines())


def test_debian12_container_probe():
    facts = facts_from_sections(sections("debian12-nspawn-probe.txt"))
    assert (facts.os_id, facts.os_version, facts.os_codename) == ("debian", "12", "bookworm")
    assert facts.arch == "x86_64"
    assert (facts.cpu_physical_cores, facts.cpu_logical_cores) == (2, 2)
    assert "avx2" in facts.cpu_flags and "avx2" in facts.cpu_features
    assert facts.mem_total_bytes == 24683652 * 1024
    assert facts.disk_free_bytes["/var/lib/lemfleet"] == 82521649152
    assert facts.systemd_running
    assert facts.container
    assert facts.gpus == ()


def test_smt_siblings_count_once():
    lines = ["# Core,Socket", "0,0", "1,0", "0,0", "1,0", "0,1", "1,1", "0,1", "1,1"]
    assert parse_lscpu_cores(lines) == (4, 8)


def test_os_release_quotes_and_comments():
    parsed = parse_os_release(["# c", "ID=ubuntu", 'VERSION_ID="24.04"', "ID_LIKE=debian", "NAME='Ubuntu'"])
    assert parsed == {"ID": "ubuntu", "VERSION_ID": "24.04", "ID_LIKE": "debian", "NAME": "Ubuntu"}


def test_cpuinfo_takes_first_cpu_only():
    model, flags = parse_cpuinfo(["model name\t: A", "flags\t\t: sse avx2", "model name\t: B", "flags\t: x"])
    assert model == "A" and flags == frozenset({"sse", "avx2"})


def test_a_host_without_systemd_is_reported():
    found = sections("debian12-nspawn-probe.txt")
    found["systemd"] = ["offline"]
    assert not facts_from_sections(found).systemd_running


def test_probe_quotes_paths():
    assert "'/tmp/with space'" in probe_command(["/tmp/with space"])
