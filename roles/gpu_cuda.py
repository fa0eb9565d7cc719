"""The CUDA backend's rules, used by ``roles.gpu_plan.choose_gpu``.

- Each GPU's compute capability comes from nvidia-smi or the device-id/name
  tables (``platform_nvidia``). A generation CUDA 12 and llama.cpp no longer
  build for (Kepler and older) is refused with its reason. An unknown capability
  is built as "native" only where a working driver lets CMake ask the GPU;
  otherwise the GPU is refused until ``gpu_targets`` names it.
- MIG: a CUDA process sees one MIG instance, so the server gets one instance
  (``CUDA_VISIBLE_DEVICES=MIG-<uuid>``) and that instance's memory, never the
  whole GPU's. ``gpu_devices`` may name the instance; by default it is the
  largest. A MIG GPU with no instance is refused with what to do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lemfleet.roles.gpu_backends import Notes, gib, label, nvidia_nodes, os_label, release, visible, vram_budget
from lemfleet.roles.gpu_choice import GpuChoice
from lemfleet.roles.gpu_devices import largest_mig, mig_instances
from lemfleet.roles.hostinfo import Gpu, HostFacts, MigDevice
from lemfleet.roles.platform_nvidia import CUDA_MIN_CC, UNSUPPORTED_WHY, cc_tuple, generation
from lemfleet.roles.platforms import cuda_installable


def _supported(gpus: Sequence[Gpu], working: bool, cfg: dict[str, Any], parent: Notes, notes: Notes) -> list[Gpu]:
    """The GPUs CUDA can build for; each refused one is a reason against, and a
    "left out" reason should CUDA be chosen for the others."""
    chosen = []
    refused = len(parent.why_not)
    for gpu in gpus:
        cc = gpu.compute_capability
        if cc and cc_tuple(cc) < CUDA_MIN_CC:
            parent.against(
                f"{label(gpu)}: {generation(cc)} (compute capability {cc}) is not supported: {UNSUPPORTED_WHY}"
            )
        elif cc is None and not (working and gpu.driver_ok) and not cfg["gpu_targets"]:
            device = f"device {gpu.pci_id}" if gpu.pci_id else "its name"
            parent.against(
                f"{label(gpu)}: compute capability unknown ({device} is not in the NVIDIA tables and no "
                "working driver can report it); set gpu_targets to it (e.g. '7.5')"
            )
        else:
            chosen.append(gpu)
    for why in parent.why_not[refused:]:
        notes.reason(f"devices: left out {why}")
    return chosen


def _pick_mig(
    chosen: list[Gpu], cfg: dict[str, Any], notes: Notes, parent: Notes
) -> tuple[list[Gpu], MigDevice | None]:
    """The GPUs to serve on, or the one MIG instance, and why."""
    wanted = next((w for w in cfg["gpu_devices"] if str(w).startswith("MIG-")), None)
    if wanted:
        hit = next(((g, m) for g, m in mig_instances(chosen) if m.uuid == wanted), None)
        if hit is None:
            parent.fail(f"gpu_devices entry {wanted!r} matches no MIG instance on the chosen GPUs")
            return [], None
        notes.reason(f"devices: MIG instance {wanted} ({hit[1].profile}) on {label(hit[0])}, chosen by gpu_devices")
        return [hit[0]], hit[1]
    mig = [g for g in chosen if g.mig_enabled]
    whole = [g for g in chosen if not g.mig_enabled]
    for gpu in (g for g in mig if not g.mig_devices):
        notes.reason(f"devices: left out {label(gpu)}, MIG on with no MIG instance listed")
        parent.against(
            f"{label(gpu)}: MIG is on but nvidia-smi -L lists no MIG instance to serve on; create instances "
            f"(nvidia-smi mig -i {gpu.index} -cgi <profile> -C) or turn MIG off (nvidia-smi -i {gpu.index} -mig 0)"
        )
    if not mig:
        return whole, None
    if whole and (left := ", ".join(label(g) for g in mig if g.mig_devices)):
        notes.reason(
            f"devices: left out {left} (MIG on): a CUDA process sees one MIG instance and cannot join it "
            "with whole GPUs; gpu_devices: 'MIG-<uuid>' serves on an instance instead"
        )
    if whole:
        return whole, None
    best = largest_mig(mig)
    if best is None:
        return [], None
    gpu, instance = best
    count = len(mig_instances(mig))
    notes.reason(
        f"devices: MIG is on, and a CUDA process sees exactly one MIG instance: serving on {instance.uuid} "
        f"({instance.profile}, {gib(instance.vram_bytes)}) of {label(gpu)}, the largest of {count}; "
        "gpu_devices: 'MIG-<uuid>' picks another, one server per instance is server_instances: per-gpu"
    )
    return [gpu], instance


def _archs(chosen: Sequence[Gpu], cfg: dict[str, Any], notes: Notes, parent: Notes) -> tuple[str, ...] | None:
    archs = tuple(sorted({g.compute_capability.replace(".", "") for g in chosen if g.compute_capability}))
    if cfg["gpu_targets"]:
        wanted = [t.replace(".", "") for t in cfg["gpu_targets"]]
        if not all(re.fullmatch(r"\d{2,3}[af]?", t) for t in wanted):
            parent.fail(f"gpu_targets={cfg['gpu_targets']!r} must be compute capabilities for cuda")
            return None
        return tuple(sorted(set(wanted)))
    if any(g.compute_capability is None for g in chosen):
        notes.reason("targets: compute capability unknown, so CMake asks the GPU at build time (native)")
    return archs


def choose_cuda(
    gpus: Sequence[Gpu], facts: HostFacts, cfg: dict[str, Any], parent: Notes, *, forced: bool
) -> GpuChoice | None:
    notes = Notes(facts.hostname)
    runtime = facts.gpu_runtime
    working = runtime.nvidia_smi_ok and all(g.driver_ok for g in gpus)
    chosen, instance = _pick_mig(_supported(gpus, runtime.nvidia_smi_ok, cfg, parent, notes), cfg, notes, parent)
    if not chosen:
        if forced:
            why = "; ".join(parent.why_not)
            parent.fail(f"gpu_backend='cuda' but no NVIDIA GPU is supported: {why}")
        return None
    if working:
        driver = runtime.nvidia_driver_version
        state = f"driver {driver} works" if driver else "the NVIDIA driver works (its version was not reported)"
        cuda = f" (CUDA {runtime.nvidia_cuda_version})" if runtime.nvidia_cuda_version else ""
        notes.reason(f"backend: cuda, {state}{cuda}")
    elif cuda_installable(release(facts)):
        state = "is broken" if runtime.nvidia_error else "is not installed or not loaded"
        notes.reason(f"backend: cuda; the NVIDIA driver {state}, the drivers step installs it")
        notes.warn(f"the NVIDIA driver {state} on this host; a reboot may be needed after install")
    else:
        parent.against(f"no working NVIDIA driver and no known install route on {os_label(facts)}")
        if forced:
            parent.fail(f"gpu_backend='cuda' on {os_label(facts)}: {parent.why_not[-1]}")
        return None
    archs = _archs(chosen, cfg, notes, parent)
    if archs is None:
        return None
    notes.reason(f"targets: CMAKE_CUDA_ARCHITECTURES={';'.join(archs) or 'native'}")
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # so CUDA numbers GPUs as nvidia-smi does
    nodes = nvidia_nodes(chosen)
    split: tuple[float, ...] = ()
    if instance is not None:
        env["CUDA_VISIBLE_DEVICES"] = instance.uuid
        notes.reason(f"env: CUDA_VISIBLE_DEVICES={instance.uuid}, the MIG instance")
        if instance.vram_from_profile:
            notes.warn(f"memory of {instance.uuid} taken from its profile name {instance.profile}")
        notes.reason(f"vram: {gib(instance.vram_bytes)} of MIG instance {instance.profile}, not the whole GPU's")
        budget = instance.vram_bytes or 0
        nodes += ("char-nvidia-caps",)  # MIG access goes through /dev/nvidia-caps/nvidia-cap*
    else:
        env.update(visible(chosen, facts, "CUDA_VISIBLE_DEVICES", notes))
        budget, split = vram_budget(chosen, notes)
    return notes.choice(
        backend="cuda", devices=tuple(chosen), cuda_architectures=archs, env=env,
        vram_budget_bytes=budget, tensor_split=split, device_nodes=nodes,
    )  # fmt: skip
