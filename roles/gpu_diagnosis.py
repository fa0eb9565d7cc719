"""What the GPU plan says about the facts before it chooses: what was detected,
what detection corrected, which driver faults it diagnosed, and whether the
facts can be trusted at all.

Rules, so that a GPU host never ends on the CPU silently:

- A fact error (a GPU tool's output no parser recognised, or a vendor tool that
  printed nothing while the bus shows that vendor's GPU) means the GPU list
  cannot be trusted: the plan refuses, or serves on the CPU only under
  ``gpu_allow_cpu_fallback``.
- A diagnosed driver fault is shown as "diagnosis: <class> (<evidence>);
  action: <fix>". When the plan would end on the CPU, a fault refuses it too,
  unless the PCI listing was read and shows no GPU of that vendor (a driver left
  over on a host without the GPU).
"""

from __future__ import annotations

from lemfleet.roles.gpu_backends import Notes, gib, label
from lemfleet.roles.gpu_devices import physical_gpus
from lemfleet.roles.hostinfo import Gpu, GpuFault, HostFacts


def _describe(gpu: Gpu) -> str:
    arch = gpu.gfx_target or (f"cc {gpu.compute_capability}" if gpu.compute_capability else "")
    partition = "/".join(p for p in (gpu.compute_partition, gpu.memory_partition) if p)
    if partition and gpu.partition_id is not None:
        partition += f" partition {gpu.partition_id}"
    parts = [arch, gib(gpu.vram_bytes) if gpu.vram_bytes else "", gpu.pci_slot or "", partition]
    mig = f"MIG on, {len(gpu.mig_devices)} instance(s)" if gpu.mig_devices else "MIG on"
    parts += [mig if gpu.mig_enabled else "", "iGPU" if gpu.integrated else ""]
    parts += ["" if gpu.driver_ok else "no working driver"]
    if gpu.pci_id and gpu.name.endswith(f"[{gpu.pci_id}]"):
        parts.append("device id not in the tables")
    return f"{label(gpu)} ({', '.join(p for p in parts if p)})"


def detected(facts: HostFacts) -> str:
    """The "detected:" reason: every logical GPU, and the physical count where they differ."""
    if not facts.gpus:
        return "detected: no AMD or NVIDIA GPU"
    physical = len(physical_gpus(facts.gpus))
    count = "" if physical == len(facts.gpus) else f"{physical} physical GPU(s) as {len(facts.gpus)} partitions: "
    return f"detected: {count}{'; '.join(map(_describe, facts.gpus))}"


def report(facts: HostFacts, notes: Notes) -> None:
    """Corrections, diagnoses and probe errors as reasons and warnings."""
    runtime = facts.gpu_runtime
    for gpu in facts.gpus:
        for note in gpu.notes:
            notes.reason(f"facts: {label(gpu)}: {note}")
    vendors = {g.vendor for g in facts.gpus}
    for fault in runtime.faults:
        notes.reason(f"diagnosis: {fault.describe()}")
        absent = runtime.pci_listed and fault.vendor not in vendors
        where = f" (no {fault.vendor} GPU on the PCI bus: a driver left over)" if absent else ""
        notes.warn(f"GPU driver fault{where}, {fault.describe()}")
    if runtime.nvidia_error and not any(f.vendor == "nvidia" for f in runtime.faults):
        notes.warn(f"nvidia-smi failed: {runtime.nvidia_error}")
    for error in runtime.probe_errors:
        notes.warn(error)


def untrusted(facts: HostFacts) -> str | None:
    """Why the GPU facts cannot be trusted, or None."""
    errors = facts.gpu_runtime.fact_errors
    return "; ".join(errors) if errors else None


def blocking_faults(facts: HostFacts) -> list[GpuFault]:
    """Faults that a CPU plan would hide: all of them, except a vendor's faults on a
    host whose PCI listing was read and shows none of that vendor's GPUs."""
    runtime = facts.gpu_runtime
    vendors = {g.vendor for g in facts.gpus}
    return [f for f in runtime.faults if f.vendor in vendors or not runtime.pci_listed]
