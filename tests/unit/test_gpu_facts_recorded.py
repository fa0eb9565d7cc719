"""The fact parsers on the second batch of real recorded outputs (issue 15): MIG listings,
partitioned Instinct parts, JSON layouts, older NVIDIA generations, vGPU hosts and broken
drivers. Each row says what the parser must conclude from one fixture; its ``# source:``
line (in the file and in tests/fixtures/gpu/INDEX.md) says where the output was posted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lemfleet.roles.facts.gpu import parse_kernel_log
from lemfleet.roles.facts.gpu_amd import parse_rocminfo
from lemfleet.roles.facts.gpu_amd_smi import parse_amd_smi
from lemfleet.roles.facts.gpu_nvidia import parse_nvidia_smi
from lemfleet.roles.facts.gpu_pci import GpuReport, settle_gfx
from lemfleet.roles.facts.gpu_rocm_smi import parse_rocm_smi
from tests.fixtures.gpu.hosts import read, source

MIB = 2**20
Parser = Callable[[list[str]], GpuReport]


def _mig(gpu: Any) -> list[tuple[str, str, int | None]]:
    return [(m.profile, m.uuid[:12], m.vram_bytes) for m in gpu.mig_devices]


# (fixture, parser, [per-GPU expected attributes]); "mig" compares (profile, uuid prefix, bytes).
CASES: list[tuple[str, Parser, list[dict[str, Any]]]] = [
    # -- MIG: -L listings (instance memory from the profile, in decimal GB)
    ("nvidia-smi/a100-80gb-pcie-mig-2x3g40gb-list.txt", parse_nvidia_smi, [
        dict(name="NVIDIA A100 80GB PCIe", compute_capability="8.0", mig_enabled=True, vram_bytes=None,
             mig=[("3g.40gb", "MIG-0929581a", 40 * 10**9), ("3g.40gb", "MIG-3adbed3a", 40 * 10**9)]),
    ]),
    ("nvidia-smi/a100-sxm4-80gb-mig-7x1g10gb-list.txt", parse_nvidia_smi, [
        dict(uuid="GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16", mig_enabled=True,
             mig=[("1g.10gb", u, 10 * 10**9) for u in (
                 "MIG-feb88891", "MIG-a25704ba", "MIG-50f1c4c9", "MIG-36c795f2", "MIG-3f45d38c",
                 "MIG-96655de9", "MIG-1aae4990")]),
    ]),
    ("nvidia-smi/a100-sxm4-80gb-x4-gpu0-mig-4x1g20gb-list.txt", parse_nvidia_smi, [
        dict(index=0, mig_enabled=True, mig=[("1g.20gb", u, 20 * 10**9) for u in (
            "MIG-ce861fb0", "MIG-a45882f0", "MIG-f00d722c", "MIG-930574a9")]),
        *[dict(index=i, mig_enabled=None, mig=[], compute_capability="8.0") for i in (1, 2, 3)],
    ]),
    ("nvidia-smi/a100-80gb-pcie-mig-1x2g20gb-list.txt", parse_nvidia_smi, [
        dict(mig=[("2g.20gb", "MIG-a65afc88", 20 * 10**9)]),
    ]),
    # -- MIG: the table's "MIG M." cell (truncated names still get their capability)
    ("nvidia-smi/a100-80gb-pcie-x2-mig-enabled-driver520-table-partial.txt", parse_nvidia_smi, [
        dict(index=i, name="NVIDIA A100 80G...", compute_capability="8.0", mig_enabled=True, mig=[],
             vram_bytes=81920 * MIB) for i in (0, 1)
    ]),
    ("nvidia-smi/a100-sxm-x2-mig-mixed-driver510-table-partial.txt", parse_nvidia_smi, [
        dict(index=0, compute_capability="8.0", mig_enabled=False, pci_slot="0000:01:00.0"),
        dict(index=1, compute_capability="8.0", mig_enabled=True, pci_slot="0000:41:00.0"),
    ]),
    ("nvidia-smi/rtx-pro-6000-blackwell-x3-mig-mixed-table-partial.txt", parse_nvidia_smi, [
        dict(index=0, compute_capability="12.0", mig_enabled=False, vram_bytes=97887 * MIB),
        dict(index=1, compute_capability="12.0", mig_enabled=False),
        dict(index=2, compute_capability="12.0", mig_enabled=True, pci_slot="0001:04:00.0"),
    ]),
    ("nvidia-smi/a800-sxm4-mig-enabled-no-instances-listed-driver535-table-partial.txt", parse_nvidia_smi, [
        dict(name="NVIDIA A800-SXM4-80GB", compute_capability="8.0", mig_enabled=True, mig=[]),
    ]),
    # -- MIG: query fields
    ("nvidia-smi/query-uuid-mig-mode-4gpu-csv.txt", parse_nvidia_smi, [
        dict(index=0, uuid="GPU-ec845691-fb46-e16d-abfb-b135308cb39f", mig_enabled=True),
        *[dict(index=i, mig_enabled=False) for i in (1, 2, 3)],
    ]),
    ("nvidia-smi/query-mig-mode-not-supported-rtx.txt", parse_nvidia_smi, [dict(index=0, mig_enabled=None)]),
    # -- older generations and vGPU hosts
    ("nvidia-smi/tesla-k80-gce-driver410-table-partial.txt", parse_nvidia_smi, [
        dict(name="Tesla K80", compute_capability="3.7", vram_bytes=11441 * MIB, pci_slot="0000:00:04.0"),
    ]),
    ("nvidia-smi/tesla-k80-x4-plus-rtx2080ti-list.txt", parse_nvidia_smi, [
        dict(index=0, compute_capability="3.7", uuid=None), dict(index=1, compute_capability="3.7"),
        dict(index=2, name="GeForce RTX 2080 Ti", compute_capability="7.5"),
        dict(index=3, compute_capability="3.7"), dict(index=4, compute_capability="3.7"),
    ]),
    ("nvidia-smi/titan-xp-driver384-table-partial.txt", parse_nvidia_smi, [
        dict(name="TITAN Xp", compute_capability="6.1", vram_bytes=12174 * MIB),
    ]),
    ("nvidia-smi/quadro-p400-vgpu-host-driver460-cuda-na-table-partial.txt", parse_nvidia_smi, [
        dict(name="Quadro P400", compute_capability="6.1", vram_bytes=2047 * MIB, mig_enabled=None),
    ]),
    ("nvidia-smi/rtx4070-driver550-table-partial.txt", parse_nvidia_smi, [
        dict(name="NVIDIA GeForce RTX 4070", compute_capability="8.9", vram_bytes=12282 * MIB),
    ]),
    # -- layouts the parser does not read, and driver failures: no GPU, and never silently
    ("nvidia-smi/tesla-t4-x2-vgpu-host-smi-vgpu-partial.txt", parse_nvidia_smi, []),
    ("nvidia-smi/tesla-k40c-query-nvsmi-log-partial.txt", parse_nvidia_smi, []),
    ("nvidia-smi/failure-driver-library-version-mismatch.txt", parse_nvidia_smi, []),
    ("nvidia-smi/failure-version-mismatch-nvml-library-570.txt", parse_nvidia_smi, []),
    ("nvidia-smi/failure-no-devices-were-found-rtx5090.txt", parse_nvidia_smi, []),
    # -- AMD: gfx names checked against the PCI table, unknown ids kept
    ("rocm-smi/mi250-gcd-all-info-json-gfx9010.txt", parse_rocm_smi, [
        dict(name="AMD INSTINCT MI250 (MCM) OAM AC MBA", pci_id="1002:740c", gfx_target="gfx90a",
             kfd_node=2, pci_slot="0000:29:00.0"),
    ]),
    ("rocm-smi/radeon-780m-phoenix3-json-partial.txt", parse_rocm_smi, [
        dict(name="Phoenix3", pci_id="1002:1900", gfx_target=None, pci_slot="0000:c4:00.0"),
    ]),
    ("amd-smi/mi350x-static-text.txt", parse_amd_smi, [
        dict(name="AMD Instinct MI350X", pci_id="1002:75a0", gfx_target="gfx950", pci_slot="0000:05:00.0"),
    ]),
    ("amd-smi/rx7800xt-static-json-gpu-data-partial.txt", parse_amd_smi, [
        dict(name="AMD Radeon RX 7800 XT", pci_id="1002:747e", gfx_target="gfx1101", pci_slot="0000:03:00.0"),
    ]),
    # amd-smi metric carries only the GPU number: one GPU, nothing else known, and no error.
    ("amd-smi/w7700-metric-usage-json-partial.txt", parse_amd_smi, [
        dict(index=0, pci_id=None, gfx_target=None, vram_bytes=None),
    ]),
    # -- AMD: partitions
    ("rocm-smi/mi300x-x8-spx-concise-partial.txt", parse_rocm_smi, [
        dict(index=i, kfd_node=i + 2, compute_partition="SPX", memory_partition="NPS1", partition_id=0)
        for i in range(3)
    ]),
    # Secondary partitions report "Device ID: N/A": kept, with their name and no guessed id.
    ("rocm-smi/mi300x-partitioned-showid-device-id-na-partial.txt", parse_rocm_smi, [
        dict(index=i, name="AMD Instinct MI300X", pci_id=None if i % 2 else "1002:74a1") for i in range(6)
    ]),
    ("rocm-smi/mi100-x4-concise-legacy-in-docker.txt", parse_rocm_smi, [
        dict(index=i, pci_id=None, kfd_node=None) for i in range(4)
    ]),
    ("rocminfo/mi250x-agent16-partial.txt", parse_rocminfo, [
        dict(name="AMD Instinct MI250X/MI250", gfx_target="gfx90a", pci_id="1002:740c", kfd_node=15,
             pci_slot="0000:93:00.0"),
    ]),
    ("rocminfo/failure-kfd-permission-denied-in-docker.txt", parse_rocminfo, []),
    ("rocminfo/failure-kfd-invalid-argument-mi300x-container.txt", parse_rocminfo, []),
    ("rocminfo/failure-kfd-out-of-resources-pitcairn.txt", parse_rocminfo, []),
    ("kernel-log/mi100-arcturus-gpu-info-firmware-missing.txt", parse_kernel_log, []),
    ("kernel-log/wx2100-polaris12-mc-firmware-missing.txt", parse_kernel_log, []),
    ("kernel-log/rtx5090-nvrm-rminitadapter-failed-partial.txt", parse_kernel_log, []),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "parser", "expected"), CASES, ids=[c[0] for c in CASES])
def test_parser_reads_each_gpu(fixture: str, parser: Parser, expected: list[dict[str, Any]]) -> None:
    gpus, _ = parser(read(fixture))
    assert len(gpus) == len(expected), f"{fixture} ({source(fixture)}): {gpus}"
    for gpu, attributes in zip(gpus, expected, strict=True):
        actual = {key: _mig(gpu) if key == "mig" else getattr(gpu, key) for key in attributes}
        assert actual == attributes, f"{fixture} ({source(fixture)})"


# (fixture, parser, fault kind and vendor or None, text every fact error must hold or None)
VERDICTS: list[tuple[str, Parser, tuple[str, str] | None, str | None]] = [
    ("nvidia-smi/failure-driver-library-version-mismatch.txt", parse_nvidia_smi,
     ("version-mismatch", "nvidia"), None),
    ("nvidia-smi/failure-version-mismatch-nvml-library-570.txt", parse_nvidia_smi,
     ("version-mismatch", "nvidia"), None),
    ("nvidia-smi/failure-no-devices-were-found-rtx5090.txt", parse_nvidia_smi, ("no-devices", "nvidia"), None),
    ("nvidia-smi/failure-couldnt-communicate-with-driver.txt", parse_nvidia_smi,
     ("module-not-loaded", "nvidia"), None),
    ("nvidia-smi/tesla-t4-x2-vgpu-host-smi-vgpu-partial.txt", parse_nvidia_smi, None,
     "nvidia-smi printed output in a layout the parser does not know: '|   0  Tesla T4"),
    ("nvidia-smi/tesla-k40c-query-nvsmi-log-partial.txt", parse_nvidia_smi, None,
     "nvidia-smi printed output in a layout the parser does not know: 'GPU 00000000:84:00.0'"),
    ("rocminfo/failure-kfd-permission-denied-in-docker.txt", parse_rocminfo, ("device-nodes", "amd"), None),
    ("rocminfo/failure-kfd-invalid-argument-mi300x-container.txt", parse_rocminfo, ("device-nodes", "amd"), None),
    ("rocminfo/failure-kfd-out-of-resources-pitcairn.txt", parse_rocminfo, ("device-nodes", "amd"), None),
    ("kernel-log/mi100-arcturus-gpu-info-firmware-missing.txt", parse_kernel_log, ("firmware-missing", "amd"), None),
    ("kernel-log/wx2100-polaris12-mc-firmware-missing.txt", parse_kernel_log, ("firmware-missing", "amd"), None),
    ("kernel-log/rtx5090-nvrm-rminitadapter-failed-partial.txt", parse_kernel_log, ("no-devices", "nvidia"), None),
    # Recognised layouts: no fault and no fact error.
    ("amd-smi/w7700-metric-usage-json-partial.txt", parse_amd_smi, None, None),
    ("rocm-smi/mi100-x4-concise-legacy-in-docker.txt", parse_rocm_smi, None, None),
    ("nvidia-smi/query-mig-mode-not-supported-rtx.txt", parse_nvidia_smi, None, None),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "parser", "fault", "error"), VERDICTS, ids=[v[0] for v in VERDICTS])
def test_failures_are_diagnosed_or_refused(
    fixture: str, parser: Parser, fault: tuple[str, str] | None, error: str | None
) -> None:
    lines = read(fixture)
    _, runtime = parser(lines)
    assert [(f.kind, f.vendor) for f in runtime.faults] == ([fault] if fault else []), source(fixture)
    for found in runtime.faults:
        assert found.evidence.split(" / ")[0] in [line.strip() for line in lines]  # quoted as printed
        assert found.action
    assert list(runtime.fact_errors) == ([runtime.fact_errors[0]] if error else [])
    if error:
        assert runtime.fact_errors[0].startswith(error), runtime.fact_errors


def test_version_mismatch_quotes_the_library_version() -> None:
    _, runtime = parse_nvidia_smi(read("nvidia-smi/failure-version-mismatch-nvml-library-570.txt"))
    assert runtime.faults[0].evidence.endswith("/ NVML library version: 570.124")
    assert "reboot" in runtime.faults[0].action


def test_gfx9010_is_corrected_and_says_so() -> None:
    (gpu,), _ = parse_rocm_smi(read("rocm-smi/mi250-gcd-all-info-json-gfx9010.txt"))
    assert gpu.notes == ("rocm-smi reported gfx9010, which is not an LLVM gfx target (its version read "
                         "in decimal digits: gfx90a)",)  # fmt: skip


def test_the_pci_table_wins_over_a_runtime_gfx_name() -> None:
    # Hand-built: rocminfo/rx6700xt-gfx1031.txt with its Name line changed to gfx1030, as a
    # runtime under HSA_OVERRIDE_GFX_VERSION=10.3.0 reports it; chip 0x73df is gfx1031.
    lines = [line.replace("gfx1031", "gfx1030") for line in read("rocminfo/rx6700xt-gfx1031.txt")]
    (gpu,), _ = parse_rocminfo(lines)
    settled = settle_gfx(gpu)
    assert settled.gfx_target == "gfx1031"
    assert settled.notes == ("rocminfo reported gfx1030, but device 1002:73df is gfx1031 in the PCI table; "
                             "the table wins",)  # fmt: skip


def test_unknown_amd_device_id_is_kept() -> None:
    (gpu,), _ = parse_rocm_smi(read("rocm-smi/radeon-780m-phoenix3-json-partial.txt"))
    assert (gpu.vendor, gpu.pci_id) == ("amd", "1002:1900")


def test_every_fixture_is_in_the_index_with_its_source() -> None:
    from tests.fixtures.gpu.hosts import HERE

    index = (HERE / "INDEX.md").read_text()
    for path in sorted(HERE.rglob("*.txt")):
        relative = path.relative_to(HERE).as_posix()
        assert f"| {relative} |" in index, relative
        assert path.read_text().splitlines()[1].startswith("# hardware: "), relative
