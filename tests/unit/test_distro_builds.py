"""llama_cpp_source='distro' and 'auto': what each release's own build covers, and the plan's choice (pure)."""

from __future__ import annotations

import pytest

from lemfleet.roles.distro_builds import TABLE, distro_offer
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate
from lemfleet.roles.source_plan import choose_source

SID = ("debian", "", "sid", "x86_64")
TRIXIE = ("debian", "13", "trixie", "x86_64")
BOOKWORM = ("debian", "12", "bookworm", "x86_64")
NOBLE = ("ubuntu", "24.04", "noble", "x86_64")


def choose(release, backend="cpu", targets=(), cores=2, **settings):
    os_id, version, codename, arch = release
    return choose_source(
        validate(settings),
        os_id=os_id,
        os_version=version,
        codename=codename,
        arch=arch,
        backend=backend,
        gpu_targets=tuple(targets),
        cores=cores,
    )


def test_sid_cpu_installs_llama_server_and_ggml_at_the_tables_versions():
    offer = distro_offer(*SID, "cpu", ())
    assert offer.available and offer.known
    assert offer.versions == {
        "llama.cpp-tools": "1:0.7.0+dfsg-2",
        "libllama0": "1:0.7.0+dfsg-2",
        "libggml0": "0.27.0-1",
    }


def test_sid_vulkan_adds_its_backend_package():
    offer = distro_offer(*SID, "vulkan", ())
    assert offer.available
    assert offer.versions["libggml0-backend-vulkan"] == "0.27.0-1"


@pytest.mark.parametrize("gfx", ["gfx803", "gfx90a", "gfx1030", "gfx1100", "gfx1102"])
def test_sid_hip_covers_the_gfx_its_offload_bundles_name(gfx):
    offer = distro_offer(*SID, "hip", (gfx,))
    assert offer.available and offer.targets_covered == (gfx,)
    assert offer.versions["libggml0-backend-hip"] == "0.27.0-1"


@pytest.mark.parametrize("gfx", ["gfx942", "gfx1103", "gfx1151", "gfx1201"])
def test_distro_refuses_a_gfx_the_hip_backend_has_no_code_for_naming_it_and_the_sources_that_work(gfx):
    choice = choose(SID, "hip", ("gfx1100", gfx), llama_cpp_source="distro")
    assert choice.refusal is not None
    assert f"has no offload code for {gfx};" in choice.refusal
    assert "'pypi-sdist', 'git', 'tarball'" in choice.refusal and "'auto'" in choice.refusal
    assert choice.offers["distro"]["available"] is False
    assert choice.offers["distro"]["missing_targets"] == [gfx]
    with pytest.raises(SettingsError, match=f"llama_cpp_source='distro' cannot serve .* for gfx1100, {gfx}"):
        choice.check("web1")


def test_trixie_backports_has_ggml_but_no_llama_server_package():
    choice = choose(TRIXIE, "vulkan", llama_cpp_source="distro")
    assert choice.refusal is not None
    assert "trixie-backports" in choice.refusal and "no llama.cpp-tools package" in choice.refusal
    assert TABLE[("debian", "13")].backends["hip"].runtime.startswith("HIP 5.7.1")


def test_bookworm_backports_has_nothing():
    offer = distro_offer(*BOOKWORM, "cpu", ())
    assert offer.known and not offer.available
    assert "has nothing" in offer.reason


@pytest.mark.parametrize("release", [NOBLE, ("debian", "", "sid", "aarch64")])
def test_a_release_or_arch_outside_the_table_is_not_known_rather_than_guessed(release):
    choice = choose(release, llama_cpp_source="distro")
    assert choice.refusal is not None and "not known, check on host" in choice.refusal
    assert choice.offers["distro"]["version"] is None


def test_auto_takes_the_distro_build_where_it_serves_the_plan_and_compiles_elsewhere():
    assert choose(SID, llama_cpp_source="auto").method == "distro"
    assert choose(SID, "hip", ("gfx1100",), llama_cpp_source="auto").method == "distro"
    fallback = choose(SID, "hip", ("gfx942",), llama_cpp_source="auto")
    assert (fallback.method, fallback.refusal) == ("pypi-sdist", None)
    assert "compiled, since" in fallback.reason and "gfx942" in fallback.reason
    assert choose(NOBLE, llama_cpp_source="auto").method == "pypi-sdist"


def test_the_default_compiles_as_before_and_still_shows_what_the_distro_would_give():
    choice = choose(SID)
    assert choice.method == "pypi-sdist" and choice.refusal is None
    assert choice.offers["compile"]["version"] == "llama-cpp-python 0.3.36 sdist"
    assert choice.offers["distro"]["available"] is True
    assert choose(SID, llama_cpp_source="git").offers["compile"]["version"].startswith("git b")


def test_each_offer_gives_targets_version_and_time_to_serving():
    offers = choose(SID, "hip", ("gfx1030",)).offers
    distro, compiled = offers["distro"], offers["compile"]
    assert distro["targets"] == compiled["targets"] == ["gfx1030"]
    # README: a HIP compile for one gfx took 35.0 min on 2 cores.
    assert compiled["seconds_to_serving"] == 35 * 60
    assert 0 < distro["seconds_to_serving"] < compiled["seconds_to_serving"] / 10
    assert distro["download_bytes"] > 100e6 and "ROCm runtime" in distro["estimate"]
    assert "2026-11-30" in distro["facts_from"]
    assert choose(SID, cores=8).offers["compile"]["seconds_to_serving"] == 3 * 60


def test_every_package_in_the_table_says_where_its_facts_come_from():
    for build in TABLE.values():
        packages = [*build.server, *([build.ggml] if build.ggml else [])]
        packages += [b.package for b in build.backends.values() if b.package]
        assert all("2026-11-30" in p.source for p in packages), build.release


def test_versions_named_by_the_setting_replace_the_tables():
    choice = choose(SID, llama_cpp_source="distro", llama_cpp_distro_versions={"libggml0": "0.27.1-1"})
    assert choice.distro is not None and choice.distro.versions["libggml0"] == "0.27.1-1"
    assert "checked on the host" in choice.reason


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"llama_cpp_source": "apt"}, "llama_cpp_source='apt' is not valid; accepted: 'pypi-sdist', 'git', "
         "'tarball', 'distro', 'auto'"),
        ({"llama_cpp_distro_versions": {"bash": "5.2"}}, "llama_cpp_distro_versions={'bash': '5.2'} is not valid"),
        ({"llama_cpp_distro_versions": {"libggml0": "1;id"}}, "accepted: a mapping of package to Debian version"),
        ({"llama_cpp_distro_versions": "0.27"}, "llama_cpp_distro_versions='0.27' is not valid"),
    ],
)  # fmt: skip
def test_bad_values_name_the_setting_the_value_and_what_is_accepted(data, fragment):
    with pytest.raises(SettingsError) as err:
        validate(data, host="web1")
    assert fragment in str(err.value) and "web1" in str(err.value)
