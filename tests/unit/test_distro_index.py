"""A release lemfleet's table does not know (Ubuntu): the distro source decided from the host's own package indexes.

``fixtures/apt-index/sid.txt`` is the fact's output (roles/facts/apt_index.py: ``apt-cache policy`` and
``apt-cache show``, the fact's own command) recorded on 2026-11-30 in the test bed's Debian sid root filesystem
(the one its sid hosts boot, chrooted through an overlay, its indexes as debootstrap left them). No Ubuntu index
can be read from here (only Debian's archive is reachable), so the Ubuntu plans below are given sid's recorded
index as the host's: what is tested is the parser and the decision, on real apt-cache output.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lemfleet.roles.distro_builds import TABLE
from lemfleet.roles.facts.apt_index import AptIndex, parse_index, parse_policy
from lemfleet.roles.settings_check import validate
from lemfleet.roles.source_plan import choose_source

FIXTURES = Path(__file__).parent / "fixtures" / "apt-index"
SID = TABLE[("debian", "sid")]
assert SID.ggml is not None
SID_CPU = (*SID.server, SID.ggml)
NOBLE = ("ubuntu", "24.04", "noble", "x86_64")


def recorded(name: str = "sid.txt") -> AptIndex:
    return parse_index((FIXTURES / name).read_text().splitlines())


def choose(index: AptIndex | None, backend="cpu", targets=(), release=NOBLE, **settings):
    os_id, version, codename, arch = release
    return choose_source(validate(settings), os_id=os_id, os_version=version, codename=codename, arch=arch,
                         backend=backend, gpu_targets=tuple(targets), cores=2, host_index=index)  # fmt: skip


def test_the_recorded_sid_index_gives_the_versions_and_sizes_the_table_read_from_debians_packages_file():
    index = recorded()
    assert index.lists > 0
    expected = {p.name: p for p in (*SID_CPU, *(b.package for b in SID.backends.values() if b.package))}
    for name, package in expected.items():
        entry = index.entries[name]
        assert (entry.candidate, entry.installed) == (package.version, None), entry
        assert (entry.download_bytes, entry.installed_kib) == (package.download_bytes, package.installed_kib), entry
        assert entry.suite == "sid", entry
    assert index.entries["libggml0-backend-hip"].gpu_targets == SID.backends["hip"].gpu_targets


def test_a_host_without_any_index_has_no_entry():
    index = parse_index(["@@lemfleet:policy", "@@lemfleet:show", "E: No packages found", "@@lemfleet:lists", "0"])
    assert index == AptIndex({}, 0) and index.found() == []


def test_the_policy_of_an_installed_package_gives_the_installed_version_and_the_candidates_origin():
    lines = """libggml0:
  Installed: 0.27.0-1
  Candidate: 0.27.0-1+lemfleet1
  Version table:
     0.27.0-1+lemfleet1 500
        500 copy:/srv/lemfleet-upgrade ./ Packages
 *** 0.27.0-1 500
        500 http://10.213.255.1:3142/debian sid/main amd64 Packages
        100 /var/lib/dpkg/status
N: Unable to locate package nothing-here""".splitlines()
    assert parse_policy(lines) == {
        "libggml0": {"installed": "0.27.0-1", "candidate": "0.27.0-1+lemfleet1", "origin": "srv/lemfleet-upgrade ./"}
    }


def test_an_ubuntu_plan_is_decided_on_the_host_from_its_package_indexes():
    choice = choose(recorded(), llama_cpp_source="distro")
    assert choice.method == "distro" and choice.refusal is None
    assert choice.reason == (
        "llama_cpp_source='distro': decided on the host from its package indexes: ubuntu 24.04 (sid) has "
        "llama.cpp-tools 1:0.7.0+dfsg-2 with libggml0 0.27.0-1 and its cpu backend"
    )
    offer = choice.offers["distro"]
    assert offer["available"] and offer["facts_from"] == "the host's package indexes (apt-cache policy and show)"
    assert offer["version"] == {"llama.cpp-tools": "1:0.7.0+dfsg-2", "libllama0": "1:0.7.0+dfsg-2",
                                "libggml0": "0.27.0-1"}  # fmt: skip
    assert offer["download_bytes"] == sum(p.download_bytes for p in SID_CPU)


def test_without_the_hosts_index_an_ubuntu_plan_says_to_check_on_the_host():
    choice = choose(None, llama_cpp_source="auto")
    assert choice.method == "pypi-sdist" and "not known, check on host" in choice.reason


def test_an_ubuntu_host_without_indexes_refuses_distro_saying_why():
    choice = choose(AptIndex({}, 0), llama_cpp_source="distro")
    why = "decided on the host from its package indexes: ubuntu 24.04 has no package index on the host"
    assert choice.refusal and f"{why} (apt-get update has not run there)" in choice.refusal
    assert choose(AptIndex({}, 0), llama_cpp_source="auto").method == "pypi-sdist"


def test_hip_coverage_comes_from_the_index_entrys_gpu_architectures():
    assert choose(recorded(), "hip", ["gfx1100"], llama_cpp_source="auto").method == "distro"
    refused = choose(recorded(), "hip", ["gfx942"], llama_cpp_source="distro")
    assert refused.refusal and "libggml0-backend-hip has no offload code for gfx942; it covers gfx803" in (
        refused.refusal
    )
    assert refused.offers["distro"]["missing_targets"] == ["gfx942"]
    index = recorded()
    bare = replace(index.entries["libggml0-backend-hip"], gpu_targets=())
    unknown = choose(AptIndex({**index.entries, bare.package: bare}, index.lists), "hip", ["gfx1100"],
                     llama_cpp_source="auto")  # fmt: skip
    assert unknown.method == "pypi-sdist" and "lists no gfx targets (X-Rocm-Gpu-Architecture)" in unknown.reason


def test_a_release_with_only_the_old_llama_cpp_package_is_refused_naming_it():
    index = recorded()
    old = replace(index.entries["libggml0"], package="llama.cpp", candidate="5882+dfsg-3", installed=None)
    only_old = AptIndex({"libggml0": index.entries["libggml0"], "llama.cpp": old}, index.lists)
    choice = choose(only_old, llama_cpp_source="distro")
    assert choice.refusal and (
        "has no llama.cpp-tools and libllama0 (llama-server); it has llama.cpp 5882+dfsg-3, which lemfleet does not"
        in choice.refusal
    )


@pytest.mark.parametrize("arch", ["aarch64"])
def test_an_index_offer_on_another_architecture_is_refused(arch):
    choice = choose(recorded(), release=("ubuntu", "24.04", "noble", arch), llama_cpp_source="auto")
    assert choice.method == "pypi-sdist" and f"not {arch}" in choice.reason


def test_the_plan_json_of_an_index_offer():
    offer = choose(recorded(), "vulkan", llama_cpp_source="auto").offers["distro"]
    assert offer["suite"] == "sid" and offer["version"]["libggml0-backend-vulkan"] == "0.27.0-1"
