"""The HIP and Vulkan backends' rules and the helpers all backends share (CUDA's
rules are in ``gpu_cuda``), used by ``roles.gpu_plan.choose_gpu``.

Each ``choose_*`` takes the candidate GPUs of one vendor and returns a
``GpuChoice`` or None, recording in ``Notes`` why (or why not). ``forced`` is
True when ``gpu_backend`` names the backend: then an impossible choice is an
error that names the setting, and a doubtful one a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lemfleet.roles.gpu_choice import GpuChoice
from lemfleet.roles.gpu_devices import budget, explain_partitions, physical_gpus
from lemfleet.roles.hostinfo import Gpu, HostFacts
from lemfleet.roles.platform_amd import GFX_RE, HSA_OVERRIDE_KNOWN_GOOD, ROCM_GFX, gfx_from_override
from lemfleet.roles.platforms import label as release_label
from lemfleet.roles.platforms import os_release, rocm_route, vulkan_headers_ok
from lemfleet.roles.settings import SettingsError


class Notes:
    """Reasons, warnings, reasons against, and errors gathered while choosing."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.reasons: list[str] = []
        self.warnings: list[str] = []
        self.why_not: list[str] = []
        self.errors: list[str] = []

    def reason(self, text: str) -> None:
        self.reasons.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def against(self, text: str) -> None:
        self.why_not.append(text)

    def fail(self, text: str) -> None:
        self.errors.append(text)

    def raise_if_failed(self) -> None:
        if self.errors:
            raise SettingsError(self.errors, self.host)

    def choice(self, **values: Any) -> GpuChoice:
        self.raise_if_failed()
        return GpuChoice(reasons=tuple(self.reasons), warnings=tuple(self.warnings), **values)


def gib(size: int | None) -> str:
    return f"{(size or 0) / 2**30:.1f} GiB"


def label(gpu: Gpu) -> str:
    return f"{gpu.vendor}[{gpu.index}] {gpu.name}"


def release(facts: HostFacts) -> tuple[str, str]:
    return os_release(facts.os_id, facts.os_version, facts.os_codename)


def os_label(facts: HostFacts) -> str:
    return release_label(release(facts))


def visible(chosen: Sequence[Gpu], facts: HostFacts, variable: str, notes: Notes) -> dict[str, str]:
    """``*_VISIBLE_DEVICES`` when the chosen GPUs are a subset of the vendor's GPUs."""
    same_vendor = [g for g in facts.gpus if g.vendor == chosen[0].vendor]
    if len(chosen) == len(same_vendor):
        return {}
    value = ",".join(str(g.index) for g in sorted(chosen, key=lambda g: g.index))
    notes.reason(f"env: {variable}={value}, the runtime indexes of the chosen GPUs")
    if not all(g.driver_ok for g in chosen):
        notes.warn(f"{variable} assumes PCI order until the GPU runtime has run on the host")
    return {variable: value}


def vram_budget(chosen: Sequence[Gpu], notes: Notes) -> tuple[int, tuple[float, ...]]:
    """VRAM per physical device (partitions sharing a pool count once), and the split."""
    total, unknown, split = budget(chosen)
    for physical in physical_gpus(chosen):
        if why := explain_partitions(physical):
            notes.reason(why)
    if unknown:
        notes.warn(f"VRAM unknown for {', '.join(unknown)}; the budget counts it as 0")
    devices = len(physical_gpus(chosen))
    notes.reason(f"vram: {gib(total)} across {devices} physical GPU(s)")
    if split:
        how = "equal, as VRAM is unknown" if unknown else "proportional to VRAM"
        notes.reason(f"split: --tensor-split {','.join(map(str, split))} ({how})")
    return total, split


def _render_nodes(chosen: Sequence[Gpu], facts: HostFacts) -> tuple[str, ...]:
    """DRM render nodes of the chosen GPUs, else every render node on the host,
    else systemd's ``char-drm`` device group (nodes appear once a driver loads)."""
    known = [g.render_node for g in chosen if g.render_node]
    if len(known) == len(chosen):
        return tuple(sorted(set(known)))
    present = [n for n in facts.gpu_runtime.device_nodes if n.startswith("/dev/dri/renderD")]
    return tuple(present) or ("char-drm",)


def nvidia_nodes(chosen: Sequence[Gpu]) -> tuple[str, ...]:
    """DeviceAllow= entries of a CUDA unit. /dev/nvidia-uvm(-tools) appear on the first CUDA call (nvidia-modprobe),
    often after the unit started, and systemd allows a node path only if it exists at start: so by class."""
    fixed = ("/dev/nvidiactl", "char-nvidia-uvm")
    return fixed + tuple(f"/dev/nvidia{g.index}" for g in chosen)


# -- hip ----------------------------------------------------------------------------


def _hsa_override(gpu: Gpu, setting: str | None, notes: Notes) -> tuple[str | None, str]:
    """The override version for an unsupported gfx, or None and why not."""
    gfx = gpu.gfx_target or ""
    known = HSA_OVERRIDE_KNOWN_GOOD.get(gfx)
    hint = f"; gpu_hsa_override_gfx_version: auto would use the known-good {known}" if known else ""
    if setting is None:
        return None, f"{label(gpu)}: {gfx} is not a target ROCm's libraries support{hint}"
    if setting == "auto" and not known:
        return None, f"{label(gpu)}: no known-good HSA_OVERRIDE_GFX_VERSION for {gfx}"
    version = known if setting == "auto" else setting
    if known and version != known:
        notes.warn(f"HSA_OVERRIDE_GFX_VERSION={version} for {gfx} differs from known-good {known}")
    return version, ""


def choose_hip(
    gpus: Sequence[Gpu], facts: HostFacts, cfg: dict[str, Any], parent: Notes, *, forced: bool
) -> GpuChoice | None:
    notes = Notes(facts.hostname)
    usable: list[tuple[Gpu, str]] = []
    overrides: set[str] = set()
    rejected: list[str] = []
    for gpu in gpus:
        gfx = gpu.gfx_target
        if gfx is None:
            device = f"device {gpu.pci_id} is not in the PCI table" if gpu.pci_id else "no PCI id"
            rejected.append(f"{label(gpu)}: gfx target unknown ({device}, and no KFD or rocminfo answer)")
        elif gfx in ROCM_GFX:
            usable.append((gpu, gfx))
        else:
            version, why = _hsa_override(gpu, cfg["gpu_hsa_override_gfx_version"], notes)
            if version:
                overrides.add(version)
                usable.append((gpu, gfx_from_override(version) or gfx))
            else:
                rejected.append(why)
    for why in rejected:
        parent.against(why)
    route = rocm_route(release(facts))
    if not route.ok:
        if not forced:
            parent.against(route.how)
            return None
        notes.warn(f"gpu_backend=hip on {os_label(facts)}: {route.how}; ROCm must come from AMD")
    if not usable:
        if forced:
            why = "; ".join(parent.why_not)
            parent.fail(f"gpu_backend='hip' but no chosen GPU can run ROCm: {why}")
        return None
    if len(overrides) > 1 or (overrides and len({gfx for _, gfx in usable}) > 1):
        parent.fail(
            "gpu_hsa_override_gfx_version applies to every GPU of the process, but the chosen "
            f"GPUs would need different targets ({', '.join(sorted({g for _, g in usable}))}); "
            "pick GPUs of one family with gpu_devices"
        )
        return None
    chosen = tuple(gpu for gpu, _ in usable)
    how = route.how if route.ok else "forced by gpu_backend"
    notes.reason(f"backend: hip, {', '.join(sorted({g for _, g in usable}))} on {how}")
    for why in rejected:
        notes.reason(f"devices: left out {why} (gpu_backend: vulkan would use every GPU)")
    targets = tuple(sorted({gfx for _, gfx in usable}))
    if cfg["gpu_targets"]:
        wanted = tuple(sorted(set(cfg["gpu_targets"])))
        if not all(GFX_RE.fullmatch(t) for t in wanted):
            parent.fail(f"gpu_targets={list(wanted)!r} must be gfx names (e.g. 'gfx1100') for hip")
            return None
        if not set(targets) <= set(wanted):
            notes.warn(f"gpu_targets {list(wanted)} leave out the chosen GPUs' {list(targets)}")
        targets = wanted
    notes.reason(f"targets: GPU_TARGETS={';'.join(targets)}")
    env = visible(chosen, facts, "HIP_VISIBLE_DEVICES", notes)
    if overrides:
        version = overrides.pop()
        env["HSA_OVERRIDE_GFX_VERSION"] = version
        notes.reason(f"env: HSA_OVERRIDE_GFX_VERSION={version} (gpu_hsa_override_gfx_version)")
    budget, split = vram_budget(chosen, notes)
    nodes = ("/dev/kfd", *_render_nodes(chosen, facts))
    return notes.choice(
        backend="hip", devices=chosen, gpu_targets=targets, env=env,
        vram_budget_bytes=budget, tensor_split=split, device_nodes=nodes,
    )  # fmt: skip


# -- vulkan -------------------------------------------------------------------------


def choose_vulkan(
    gpus: Sequence[Gpu], facts: HostFacts, cfg: dict[str, Any], parent: Notes, *, forced: bool
) -> GpuChoice | None:
    notes = Notes(facts.hostname)
    ok, headers = vulkan_headers_ok(release(facts))
    if ok is False or (ok is None and not forced):
        parent.against(f"vulkan is not possible: {headers}")
        if forced:
            parent.fail(f"gpu_backend='vulkan' cannot build on this host: {headers}")
        return None
    if ok is None:
        notes.warn(headers)
    why = "forced by gpu_backend" if forced else "the explicit fallback: " + "; ".join(parent.why_not)
    notes.reason(f"backend: vulkan, {why}")
    notes.reason(f"build: {headers}")
    if cfg["gpu_targets"]:
        notes.warn("gpu_targets is ignored by the vulkan backend")
    env: dict[str, str] = {}
    if all(g.vulkan_index is not None for g in gpus):
        gpus = sorted(gpus, key=lambda g: g.vulkan_index or 0)
        env["GGML_VK_VISIBLE_DEVICES"] = ",".join(str(g.vulkan_index) for g in gpus)
        notes.reason(f"env: GGML_VK_VISIBLE_DEVICES={env['GGML_VK_VISIBLE_DEVICES']}")
    elif set(gpus) == set([g for g in facts.gpus if not g.integrated] or facts.gpus):
        notes.reason("env: none; llama.cpp uses every discrete GPU (iGPUs only when no dGPU)")
    else:
        notes.warn(
            "Vulkan device indexes are unknown until vulkaninfo runs on the host, so "
            "GGML_VK_VISIBLE_DEVICES is not set and llama.cpp uses every discrete GPU"
        )
    budget, split = vram_budget(gpus, notes)
    nodes = _render_nodes(gpus, facts)
    if any(g.vendor == "nvidia" for g in gpus):
        nodes += nvidia_nodes([g for g in gpus if g.vendor == "nvidia"])
    return notes.choice(
        backend="vulkan", devices=tuple(gpus), env=env, vram_budget_bytes=budget,
        tensor_split=split, device_nodes=nodes,
    )  # fmt: skip
