"""The host side of llama_cpp_source='distro': the install script, the offload-target check, the record (pure)."""

from __future__ import annotations

import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from lemfleet.roles.distro_builds import distro_offer, with_versions
from lemfleet.roles.distro_install import DistroState, coverage_script, install_script, parse_dpkg

MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"


@dataclass(frozen=True)
class PlanLike:
    backend: str
    gpu_targets: tuple[str, ...] = ()


def state(backend: str = "cpu", targets: tuple[str, ...] = (), versions: dict[str, str] | None = None) -> DistroState:
    offer = distro_offer("debian", "", "sid", "x86_64", backend, targets)
    if versions:
        offer = with_versions(offer, versions)
    return DistroState.of(offer, PlanLike(backend, targets))  # type: ignore[arg-type]


def offload_bundle(ids: list[str]) -> bytes:
    """An uncompressed clang offload bundle as clang-offload-bundler writes it: magic, count, then per entry
    offset, size, id length and id (little-endian 64-bit), then the code objects."""
    header = MAGIC + struct.pack("<Q", len(ids))
    body = b""
    entries = b""
    base = len(header) + sum(24 + len(i) for i in ids)
    for bundle_id in ids:
        code = b"\x7fELF" + bundle_id.encode() + b"\x00" * 16
        entries += struct.pack("<QQQ", base + len(body), len(code), len(bundle_id)) + bundle_id.encode()
        body += code
    return header + entries + body


def fake_backend(tmp_path: Path, ids: list[str]) -> Path:
    library = tmp_path / "libggml-hip.so"
    library.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(4096) + offload_bundle(ids) + bytes(512))
    return library


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False, timeout=30)


IDS = [
    "host-x86_64-unknown-linux-gnu-",
    "hipv4-amdgcn-amd-amdhsa--gfx1030",
    "hipv4-amdgcn-amd-amdhsa--gfx1100",
    "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-",
    "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack+",
]


def test_coverage_reads_the_offload_targets_of_the_library_and_passes_when_all_are_there(tmp_path):
    library, listing = fake_backend(tmp_path, IDS), tmp_path / "targets.txt"
    proc = run(coverage_script(str(library), ["gfx1100", "gfx90a"], str(listing)))
    assert proc.returncode == 0, proc.stderr
    assert listing.read_text().split() == ["gfx1030", "gfx1100", "gfx90a"]


def test_coverage_refuses_a_missing_gfx_naming_it_what_is_covered_and_the_sources_that_work(tmp_path):
    library = fake_backend(tmp_path, IDS)
    proc = run(coverage_script(str(library), ["gfx1100", "gfx942"], str(tmp_path / "targets.txt")))
    assert proc.returncode == 1
    assert f"lemfleet: {library} has no code for gfx942 (it covers: gfx1030 gfx1100 gfx90a );" in proc.stderr
    assert "sources that would work: 'pypi-sdist', 'git', 'tarball'" in proc.stderr


def test_coverage_refuses_a_library_whose_targets_cannot_be_read(tmp_path):
    library = tmp_path / "libggml-hip.so"
    library.write_bytes(b"CCOB" + bytes(1000))  # a compressed bundle: the names are not in plain bytes
    proc = run(coverage_script(str(library), ["gfx1100"], str(tmp_path / "targets.txt")))
    assert proc.returncode == 1 and "no offload targets could be read" in proc.stderr


def test_install_script_pins_holds_keeps_the_debs_and_checks_versions():
    distro = state("vulkan")
    script = install_script(distro)
    assert run(f"bash -n <<'EOF'\n{script}\nEOF").returncode == 0
    pins = "llama.cpp-tools=1:0.7.0+dfsg-2 libllama0=1:0.7.0+dfsg-2 libggml0=0.27.0-1 libggml0-backend-vulkan=0.27.0-1"
    assert f"apt-get download -q -o APT::Sandbox::User=root {pins}" in script
    assert "apt-mark hold llama.cpp-tools libllama0 libggml0 libggml0-backend-vulkan" in script
    # The kept .debs of this state come first, so it reinstalls after the archive moved on.
    assert f"if ls {distro.path}/debs/*.deb" in script
    assert "--allow-downgrades --allow-change-held-packages" in script
    # The package's postinst never downloads a web UI.
    assert "llama.cpp-tools/default-ui select simplechat' | debconf-set-selections" in script
    assert "/usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-vulkan.so ]" in script
    assert "offload" not in script and "systemctl" not in script  # the package's units are never used
    assert script.endswith(f"rm -rf {distro.path} && mv -T {distro.path}.new {distro.path}")


def test_a_hip_install_checks_every_planned_target():
    script = install_script(state("hip", ("gfx1030", "gfx1100")))
    assert "grep -aoE 'amdgcn-amd-amdhsa--gfx[0-9a-f]+' /usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-hip.so" in (
        script
    )
    assert "for t in gfx1030 gfx1100; do" in script


def test_the_build_id_and_record_name_the_package_versions():
    distro = state("cpu")
    assert distro.build_id.startswith("distro-") and distro.path.endswith(distro.build_id)
    assert state("cpu").build_id == distro.build_id != state("vulkan").build_id
    assert state("cpu", versions={"libggml0": "0.27.1-1"}).build_id != distro.build_id
    built = json.loads(distro.build_json())
    assert built["build_id"] == distro.build_id and built["backend"] == "cpu" and built["source"] == "distro"
    assert built["packages"]["llama.cpp-tools"] == "1:0.7.0+dfsg-2"
    record = distro.record_build({"id": "x", "path": "y", "binary": "/opt/lemfleet/llama.cpp/current/bin/llama-server"})
    assert record["id"] == distro.build_id and record["path"] == distro.path and record["packages"] == distro.versions
    assert distro.source.source_id == distro.build_id


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("llama.cpp-tools\t1:0.7.0+dfsg-2\thi ", {"llama.cpp-tools": ("1:0.7.0+dfsg-2", True)}),
        ("libggml0\t0.27.0-1\tii ", {"libggml0": ("0.27.0-1", False)}),
        ("libggml0\t0.27.0-1\trc ", {}),  # removed, configuration left
        ("libggml0\t\tun ", {}),
    ],
)
def test_dpkg_status_is_read_as_installed_version_and_hold(line, expected):
    assert parse_dpkg([line]) == expected
