"""Which GPU backend and devices a host serves on, and why: a pure function.

``choose_gpu(facts, settings)`` turns the detected GPUs into a ``GpuChoice``:

- ``hip`` for AMD GPUs whose gfx target ROCm's libraries support, on an OS
  release where a HIP that llama.cpp accepts can be installed (AMD's
  repository or the release's own packages: the ROCm routes of the platform
  table, ``roles/platforms.py``);
- ``cuda`` for NVIDIA GPUs with a working driver, or one the OS can install;
- ``vulkan`` as the explicit fallback for AMD parts or releases ROCm does not
  cover, where the packaged Vulkan headers are new enough (the same table);
- ``cpu`` otherwise. A GPU host that ends on the CPU is a warning, and an error
  unless ``gpu_allow_cpu_fallback`` is set.

Every decision adds a line to ``reasons``; the settings below override
detection and are validated against what was detected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from lemfleet.roles.facts.gpu_pci import normalize_slot
from lemfleet.roles.gpu_backends import Notes, choose_hip, choose_vulkan, gib, label
from lemfleet.roles.gpu_choice import GpuChoice
from lemfleet.roles.gpu_cuda import choose_cuda
from lemfleet.roles.gpu_diagnosis import blocking_faults, detected, report, untrusted
from lemfleet.roles.hostinfo import Gpu, HostFacts
from lemfleet.roles.settings import Setting, boolean, clean_group, defaults, one_of

BACKENDS = ("auto", "hip", "cuda", "vulkan", "cpu")


# -- settings -----------------------------------------------------------------------

_SLOT_OR_INDEX = re.compile(r"\d+|(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]|MIG-[0-9a-fA-F-]{8,}")
_TARGET = re.compile(r"gfx[0-9]{1,2}[0-9a-f]{2}|[0-9]{1,2}\.?[0-9][af]?")
_OVERRIDE = re.compile(r"\d{1,2}\.\d{1,2}\.\d{1,2}")


def _items(value: Any) -> list[Any] | None:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in re.split(r"[,\s]+", value) if v]
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return list(value) if isinstance(value, list | tuple) else None


def _device_list(name: str, value: Any) -> list[str]:
    items = _items(value)
    if items is None or not all(_SLOT_OR_INDEX.fullmatch(str(v)) for v in items):
        raise ValueError(
            f"{name}={value!r} is not valid; accepted: a list of GPU indexes (0, 1), PCI "
            "addresses ('0000:03:00.0') or one MIG instance ('MIG-<uuid>'), or an empty list "
            "for automatic choice"
        )
    return [str(v) for v in items]


def _target_list(name: str, value: Any) -> list[str]:
    items = _items(value)
    if items is None or not all(isinstance(v, str) and _TARGET.fullmatch(v) for v in items):
        raise ValueError(
            f"{name}={value!r} is not valid; accepted: gfx targets for hip ('gfx1100', "
            "'gfx90a') or compute capabilities for cuda ('8.9', '90'), or an empty list"
        )
    return list(items)


def _hsa_override(name: str, value: Any) -> str | None:
    if value is None or value == "auto" or (isinstance(value, str) and _OVERRIDE.fullmatch(value)):
        return value
    raise ValueError(
        f"{name}={value!r} is not valid; accepted: None (never), 'auto' (the known-good "
        "table) or a version such as '10.3.0' or '11.0.0'"
    )


SETTINGS = (
    Setting(
        "gpu_backend",
        "auto",
        "Backend for llama.cpp: 'auto' picks hip, cuda or vulkan from the detected GPUs "
        "and the OS release; 'hip', 'cuda', 'vulkan' or 'cpu' force one (validated).",
        one_of(*BACKENDS),
    ),
    Setting(
        "gpu_devices",
        [],
        "GPUs to serve on, by runtime index (0, 1) or PCI address ('0000:03:00.0'). "
        "Empty: every discrete GPU of the chosen backend (iGPUs only when no dGPU).",
        _device_list,
    ),
    Setting(
        "gpu_include_integrated",
        False,
        "Also use integrated GPUs (APUs) when a discrete GPU is present.",
        boolean,
    ),
    Setting(
        "gpu_targets",
        [],
        "Override the build's GPU_TARGETS (hip: gfx names) or CMAKE_CUDA_ARCHITECTURES "
        "(cuda: compute capabilities). Empty: exactly those of the chosen GPUs.",
        _target_list,
    ),
    Setting(
        "gpu_hsa_override_gfx_version",
        None,
        "HSA_OVERRIDE_GFX_VERSION for AMD parts ROCm does not support: None never sets "
        "it (they use vulkan), 'auto' takes the known-good table (gfx1031-1036 -> 10.3.0, "
        "gfx1103 -> 11.0.0), or give the version ('10.3.0').",
        _hsa_override,
    ),
    Setting(
        "gpu_allow_cpu_fallback",
        False,
        "Let a host that has GPUs serve on the CPU when no GPU backend fits; otherwise planning fails for that host.",
        boolean,
    ),
)
DEFAULTS = defaults(SETTINGS)


def _clean(settings: Mapping[str, Any], host: str) -> dict[str, Any]:
    return clean_group(SETTINGS, settings, host)


# -- choice -------------------------------------------------------------------------


def _pick_devices(facts: HostFacts, cfg: dict[str, Any], notes: Notes) -> tuple[Gpu, ...]:
    gpus = facts.gpus
    if cfg["gpu_devices"]:
        chosen: list[Gpu] = []
        for wanted in cfg["gpu_devices"]:
            slot = None if wanted.isdigit() else normalize_slot(wanted)
            hits = [g for g in gpus if (g.pci_slot == slot if slot else str(g.index) == wanted)]
            if wanted.startswith("MIG-"):
                hits = [g for g in gpus if any(m.uuid == wanted for m in g.mig_devices)]
            if len(hits) != 1:
                found = "; ".join(f"{label(g)} at {g.pci_slot or '?'}" for g in gpus) or "none"
                why = "matches no GPU" if not hits else "is ambiguous (give the PCI address)"
                notes.fail(f"gpu_devices entry {wanted!r} {why}; detected GPUs: {found}")
            chosen += [g for g in hits if g not in chosen]
        chosen.sort(key=lambda g: (g.vendor, g.index))  # the runtime's order, as the split is
        notes.reason(f"devices: {', '.join(map(label, chosen))}, chosen by gpu_devices")
        return tuple(chosen)
    discrete = tuple(g for g in gpus if not g.integrated)
    integrated = [g for g in gpus if g.integrated]
    if discrete and integrated and not cfg["gpu_include_integrated"]:
        notes.reason(
            f"devices: integrated {', '.join(map(label, integrated))} left out because a "
            "discrete GPU is present (gpu_include_integrated or gpu_devices can add it)"
        )
        return discrete
    return gpus


def _cpu(notes: Notes, cfg: dict[str, Any], gpu_count: int, facts: HostFacts) -> GpuChoice:
    hidden = blocking_faults(facts)
    if hidden and not gpu_count:
        message = "serving on the CPU would hide a broken GPU driver: " + "; ".join(
            f"{f.kind} ({f.source}: {f.evidence!r}), {f.action}" for f in hidden
        )
        notes.reason("fallback: the CPU plan would hide the driver fault above (gpu_allow_cpu_fallback)")
        notes.warn(message)
        if not cfg["gpu_allow_cpu_fallback"]:
            notes.fail(f"{message}. Fix the driver, or set gpu_allow_cpu_fallback: true to accept the CPU")
    if gpu_count:
        why = "; ".join(notes.why_not) or "no GPU backend fits"
        message = f"{gpu_count} GPU(s) detected but serving on the CPU: {why}"
        notes.reason("backend: cpu, no GPU backend fits")
        notes.warn(message)
        if not cfg["gpu_allow_cpu_fallback"]:
            notes.fail(
                f"{message}. Set gpu_allow_cpu_fallback: true to accept the CPU, or choose "
                "gpu_backend, gpu_devices or gpu_hsa_override_gfx_version"
            )
    return notes.choice(backend="cpu")


def choose_gpu(facts: HostFacts, settings: Mapping[str, Any]) -> GpuChoice:
    """The backend, devices, build targets and runtime environment for one host.

    ``settings`` is the host's data (validated or raw); missing ``gpu_*`` keys take
    their defaults. Raises ``SettingsError`` for invalid or unsatisfiable settings,
    and for a GPU host that would end on the CPU without ``gpu_allow_cpu_fallback``.
    """
    cfg = _clean(settings, facts.hostname)
    notes = Notes(facts.hostname)
    notes.reason(detected(facts))
    report(facts, notes)
    forced = cfg["gpu_backend"]
    if forced == "cpu":
        notes.reason("backend: cpu, set by gpu_backend")
        return notes.choice(backend="cpu")
    if why := untrusted(facts):
        message = f"the GPU facts cannot be trusted: {why}"
        if not cfg["gpu_allow_cpu_fallback"]:
            notes.fail(f"{message}. Fix or update the tool, or set gpu_allow_cpu_fallback: true to serve on the CPU")
        found = f"{len(facts.gpus)} GPU(s) detected but " if facts.gpus else ""
        notes.warn(f"{found}serving on the CPU: {message}")
        notes.reason("backend: cpu, the GPU facts cannot be trusted (gpu_allow_cpu_fallback)")
        return notes.choice(backend="cpu")
    candidates = _pick_devices(facts, cfg, notes)
    notes.raise_if_failed()
    if not candidates:
        if forced != "auto":
            notes.fail(f"gpu_backend={forced!r} but no AMD or NVIDIA GPU was detected")
        notes.reason("backend: cpu, no GPU to serve on")
        return _cpu(notes, cfg, 0, facts)
    if forced == "auto":
        return _auto(candidates, facts, cfg, notes)
    vendor = {"hip": "amd", "cuda": "nvidia"}.get(forced)
    mine = tuple(g for g in candidates if vendor in (None, g.vendor))
    if not mine:
        found = ", ".join(map(label, candidates))
        notes.fail(f"gpu_backend={forced!r} needs {vendor} GPUs, but this host has: {found}")
        notes.raise_if_failed()
    chooser = {"hip": choose_hip, "cuda": choose_cuda, "vulkan": choose_vulkan}[forced]
    choice = chooser(mine, facts, cfg, notes, forced=True)
    notes.raise_if_failed()
    return _merge(notes, choice) if choice else _cpu(notes, cfg, len(facts.gpus), facts)


def _auto(candidates: Sequence[Gpu], facts: HostFacts, cfg: dict[str, Any], notes: Notes) -> GpuChoice:
    options: list[GpuChoice] = []
    nvidia = tuple(g for g in candidates if g.vendor == "nvidia")
    amd = tuple(g for g in candidates if g.vendor == "amd")
    if nvidia and (choice := choose_cuda(nvidia, facts, cfg, notes, forced=False)):
        options.append(choice)
    if amd:
        choice = choose_hip(amd, facts, cfg, notes, forced=False)
        if choice := choice or choose_vulkan(amd, facts, cfg, notes, forced=False):
            options.append(choice)
    notes.raise_if_failed()
    if not options:
        return _cpu(notes, cfg, len(facts.gpus), facts)
    best = max(options, key=lambda c: c.vram_budget_bytes)  # first wins a tie: cuda
    if len(options) > 1:
        sizes = ", ".join(f"{c.backend} {gib(c.vram_budget_bytes)}" for c in options)
        notes.reason(f"backend: {best.backend} over the other vendor's GPUs, by VRAM ({sizes})")
    return _merge(notes, best)


def _merge(notes: Notes, choice: GpuChoice) -> GpuChoice:
    """The chosen backend's own reasons after the host-level ones."""
    return replace(
        choice,
        reasons=(*notes.reasons, *choice.reasons),
        warnings=(*notes.warnings, *choice.warnings),
    )
