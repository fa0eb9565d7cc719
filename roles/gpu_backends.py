"""The three GPU backends' rules, used by ``roles.gpu_plan.choose_gpu``.

Each ``choose_*`` takes the candidate GPUs of one vendor and returns a
``GpuChoice`` or None, recording in ``Notes`` why (or why not). ``forced`` is
True when ``gpu_backend`` names the backend: then an impossible choice is an
error that names the setting, and a doubtful one a warning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lemfleet.roles.gpu_choice import GpuChoice
from lemfleet.roles.gpu_tables import (
    CUDA_MIN_CC,
    GFX_RE,
    HSA_OVERRIDE_KNOWN_GOOD,
    ROCM_GFX,
    ROCM_ROUTES,
    cuda_installable,
    gfx_from_override,
    os_release,
    vulkan_headers_ok,
)
from lemfleet.roles.hostinfo import Gpu, HostFacts
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


def _release(facts: HostFacts) -> tuple[str, str]:
    return os_release(facts.os_id, facts.os_version, facts.os_codename)


def _os_label(facts: HostFacts) -> str:
    return " ".join(_release(facts)).capitalize()


def _visible(chosen: Sequence[Gpu], facts: HostFacts, variable: str, notes: Notes) -> dict[str, str]:
    """``*_VISIBLE_DEVICES`` when the chosen GPUs are a subset of the vendor's GPUs."""
    same_vendor = [g for g in facts.gpus if g.vendor == chosen[0].vendor]
    if len(chosen) == len(same_vendor):
        return {}
    value = ",".join(str(g.index) for g in sorted(chosen, key=lambda g: g.index))
    notes.reason(f"env: {variable}={value}, the runtime indexes of the chosen GPUs")
    if not all(g.driver_ok for g in chosen):
        notes.warn(f"{variable} assumes PCI order until the GPU runtime has run on the host")
    return {variable: value}


def _budget(chosen: Sequence[Gpu], notes: Notes) -> tuple[int, tuple[float, ...]]:
    total = sum(g.vram_bytes or 0 for g in chosen)
    unknown = [f"{g.vendor}[{g.index}]" for g in chosen if not g.vram_bytes]
    if unknown:
        notes.warn(f"VRAM unknown for {', '.join(unknown)}; the budget counts it as 0")
    notes.reason(f"vram: {gib(total)} across {len(chosen)} GPU(s)")
    if len(chosen) < 2:
        return total, ()
    if unknown:
        split = tuple(round(1 / len(chosen), 4) for _ in chosen)
    else:
        split = tuple(round((g.vram_bytes or 0) / total, 4) for g in chosen)
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


def _nvidia_nodes(chosen: Sequence[Gpu]) -> tuple[str, ...]:
    fixed = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
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
            rejected.append(f"{label(gpu)}: gfx target unknown (no KFD, rocminfo or known PCI id)")
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
    route = ROCM_ROUTES.get(_release(facts))
    if route is None or not route.ok:
        why = route.how if route else f"no known route to HIP >= 6.1 on {_os_label(facts)}"
        if not forced:
            parent.against(why)
            return None
        notes.warn(f"gpu_backend=hip on {_os_label(facts)}: {why}; ROCm must come from AMD")
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
    how = route.how if route and route.ok else "forced by gpu_backend"
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
    env = _visible(chosen, facts, "HIP_VISIBLE_DEVICES", notes)
    if overrides:
        version = overrides.pop()
        env["HSA_OVERRIDE_GFX_VERSION"] = version
        notes.reason(f"env: HSA_OVERRIDE_GFX_VERSION={version} (gpu_hsa_override_gfx_version)")
    budget, split = _budget(chosen, notes)
    nodes = ("/dev/kfd", *_render_nodes(chosen, facts))
    return notes.choice(
        backend="hip", devices=chosen, gpu_targets=targets, env=env,
        vram_budget_bytes=budget, tensor_split=split, device_nodes=nodes,
    )  # fmt: skip


# -- cuda ---------------------------------------------------------------------------


def _cc(gpu: Gpu) -> tuple[int, ...] | None:
    return tuple(int(p) for p in gpu.compute_capability.split(".")) if gpu.compute_capability else None


def choose_cuda(
    gpus: Sequence[Gpu], facts: HostFacts, cfg: dict[str, Any], parent: Notes, *, forced: bool
) -> GpuChoice | None:
    notes = Notes(facts.hostname)
    minimum = ".".join(map(str, CUDA_MIN_CC))
    chosen = []
    for gpu in gpus:
        cc = _cc(gpu)
        if cc is not None and cc < CUDA_MIN_CC:
            parent.against(f"{label(gpu)}: compute capability {gpu.compute_capability} < {minimum}")
        else:
            chosen.append(gpu)
    runtime = facts.gpu_runtime
    working = runtime.nvidia_smi_ok and all(g.driver_ok for g in chosen)
    if not chosen:
        if forced:
            why = "; ".join(parent.why_not)
            parent.fail(f"gpu_backend='cuda' but no NVIDIA GPU is supported: {why}")
        return None
    if working:
        notes.reason(
            f"backend: cuda, driver {runtime.nvidia_driver_version} works"
            + (f" (CUDA {runtime.nvidia_cuda_version})" if runtime.nvidia_cuda_version else "")
        )
    elif cuda_installable(_release(facts)):
        state = "is broken" if runtime.nvidia_error else "is not installed or not loaded"
        notes.reason(f"backend: cuda; the NVIDIA driver {state}, the drivers step installs it")
        notes.warn(f"the NVIDIA driver {state} on this host; a reboot may be needed after install")
    else:
        parent.against(f"no working NVIDIA driver and no known install route on {_os_label(facts)}")
        if forced:
            parent.fail(f"gpu_backend='cuda' on {_os_label(facts)}: {parent.why_not[-1]}")
        return None
    archs = tuple(sorted({g.compute_capability.replace(".", "") for g in chosen if g.compute_capability}))
    if cfg["gpu_targets"]:
        wanted = [t.replace(".", "") for t in cfg["gpu_targets"]]
        if not all(re.fullmatch(r"\d{2,3}[af]?", t) for t in wanted):
            parent.fail(f"gpu_targets={cfg['gpu_targets']!r} must be compute capabilities for cuda")
            return None
        archs = tuple(sorted(set(wanted)))
    elif any(g.compute_capability is None for g in chosen):
        notes.warn("compute capability unknown for some GPUs; set gpu_targets to pin the build")
    notes.reason(f"targets: CMAKE_CUDA_ARCHITECTURES={';'.join(archs) or 'native'}")
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # so CUDA numbers GPUs as nvidia-smi does
    env.update(_visible(chosen, facts, "CUDA_VISIBLE_DEVICES", notes))
    budget, split = _budget(chosen, notes)
    return notes.choice(
        backend="cuda", devices=tuple(chosen), cuda_architectures=archs, env=env,
        vram_budget_bytes=budget, tensor_split=split, device_nodes=_nvidia_nodes(chosen),
    )  # fmt: skip


# -- vulkan -------------------------------------------------------------------------


def choose_vulkan(
    gpus: Sequence[Gpu], facts: HostFacts, cfg: dict[str, Any], parent: Notes, *, forced: bool
) -> GpuChoice | None:
    notes = Notes(facts.hostname)
    ok, headers = vulkan_headers_ok(_release(facts))
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
    budget, split = _budget(gpus, notes)
    nodes = _render_nodes(gpus, facts)
    if any(g.vendor == "nvidia" for g in gpus):
        nodes += _nvidia_nodes([g for g in gpus if g.vendor == "nvidia"])
    return notes.choice(
        backend="vulkan", devices=tuple(gpus), env=env, vram_budget_bytes=budget,
        tensor_split=split, device_nodes=nodes,
    )  # fmt: skip
