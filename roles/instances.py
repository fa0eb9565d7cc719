"""How many llama-server processes a host runs, and on which devices: ``server_instances``, a pure choice.

- ``one``: one server across every chosen GPU (``--tensor-split``), as before;
- ``per-gpu``: one server per chosen GPU, per MIG instance where the plan serves
  on MIG, per partition where the plan found a partitioned part;
- ``auto``: ``per-gpu`` when the host has 2 or more such devices and the model
  plus its context fits the smallest of them, else ``one``;
- an integer N: N replicas. On a CPU plan the threads are split between them;
  on a GPU plan replica i serves on device i modulo the device count.
- None (the default): ``auto``, except that a host whose deploy record predates
  instances (a ``deployed.json`` without ``instances``) keeps its one server
  until ``server_instances`` is set for it, so an upgrade never re-lays a host out.

One instance keeps the plain unit ``<unit>.service``. Several run as the
template ``<unit>@.service``: instance N listens on ``server_port + N`` and has
its own environment file (device variables, threads) and a drop-in with
``DeviceAllow=`` for its own device only (roles/server_units.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lemfleet.roles.gpu_backends import nvidia_nodes
from lemfleet.roles.gpu_choice import GpuChoice
from lemfleet.roles.gpu_devices import mig_instances, physical_gpus
from lemfleet.roles.hostinfo import Gpu, HostFacts
from lemfleet.roles.settings import SettingsError

MODES = ("one", "per-gpu", "auto")
MAX_INSTANCES = 64
ACCEPTED = (
    "'one', 'per-gpu', 'auto', an integer from 1 to 64, or None (auto, but a host deployed before instances "
    "keeps one server)"
)
GIB = 2**30
# The variables that pick a process's devices; an instance's own value replaces the plan's.
VISIBLE = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "GGML_VK_VISIBLE_DEVICES")
# What auto counts beside the weights: an f16 KV cache of a GQA model is about 128 KiB a token
# (8B-class), and the compute buffers about 512 MiB. An estimate: per-gpu or one can be set outright.
KV_BYTES_PER_TOKEN = 128 * 1024
COMPUTE_BUFFER_BYTES = 512 * 2**20
UNKNOWN_CTX_TOKENS = 32768  # server_ctx_size=0 takes the model's own context, unknown to the plan


def check_setting(name: str, value: Any) -> str | int | None:
    """The settings check of ``server_instances``: a mode, an integer (1 is ``one``), or None."""
    if value is None or value in MODES:
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INSTANCES:
        return "one" if value == 1 else value
    raise ValueError(f"{name}={value!r} is not valid; accepted: {ACCEPTED}")


@dataclass(frozen=True)
class Instance:
    """One llama-server of a host: its unit, port, threads and devices."""

    index: int | None  # None: the plain unit <unit>.service
    port: int
    threads: int
    env: dict[str, str] = field(default_factory=dict)  # the whole GPU runtime environment of this process
    device_nodes: tuple[str, ...] = ()
    devices: tuple[str, ...] = ("cpu",)  # what it serves on, for the record: "cuda:0", "MIG-…", "hip:2"
    tensor_split: tuple[float, ...] = ()

    def name(self, unit_name: str) -> str:
        """The unit's name without ``.service``: ``lemfleet-llama`` or ``lemfleet-llama@1``."""
        return unit_name if self.index is None else f"{unit_name}@{self.index}"

    def unit(self, unit_name: str) -> str:
        return f"{self.name(unit_name)}.service"

    def to_json(self, unit_name: str) -> dict[str, Any]:
        return {"unit": self.unit(unit_name), "port": self.port, "devices": list(self.devices), "threads": self.threads}


@dataclass(frozen=True)
class Slot:
    """A device one instance can serve on alone."""

    label: str
    env: dict[str, str]
    nodes: tuple[str, ...]
    vram_bytes: int | None


def _render(gpu: Gpu, fallback: Sequence[str]) -> tuple[str, ...]:
    return (gpu.render_node,) if gpu.render_node else tuple(n for n in fallback if "render" in n or n == "char-drm")


def device_slots(gpu: GpuChoice, facts: HostFacts, wanted_devices: Any = ()) -> tuple[list[Slot], str]:
    """The devices a per-gpu layout would give one server each, or an empty list and why not.

    ``wanted_devices`` is ``gpu_devices``: where it names MIG instances, only those get a server.
    """
    if gpu.backend == "cpu":
        return [], "the plan serves on the CPU"
    if gpu.backend == "cuda" and gpu.env.get("CUDA_VISIBLE_DEVICES", "").startswith("MIG-"):
        items = re.split(r"[,\s]+", wanted_devices) if isinstance(wanted_devices, str) else wanted_devices or ()
        named = {str(w) for w in items if str(w).startswith("MIG-")}
        pairs = [
            (g, m) for g, m in mig_instances(facts.gpus) if g.vendor == "nvidia" and (not named or m.uuid in named)
        ]
        return [
            Slot(m.uuid, {"CUDA_VISIBLE_DEVICES": m.uuid}, (*nvidia_nodes([g]), "char-nvidia-caps"), m.vram_bytes)
            for g, m in pairs
        ], ""  # fmt: skip
    shared = {id(m): p for p in physical_gpus(gpu.devices) for m in p.members}
    slots = []
    for g in gpu.devices:
        pool = shared[id(g)]
        vram = (pool.vram_bytes or 0) // len(pool.members) if pool.shared_pool and pool.vram_bytes else g.vram_bytes
        if gpu.backend == "cuda":
            slots.append(Slot(f"cuda:{g.index}", {"CUDA_VISIBLE_DEVICES": str(g.index)},
                              nvidia_nodes([g]), vram))  # fmt: skip
        elif gpu.backend == "hip":
            nodes = ("/dev/kfd", *_render(g, gpu.device_nodes))
            slots.append(Slot(f"hip:{g.index}", {"HIP_VISIBLE_DEVICES": str(g.index)}, nodes, vram))
        else:
            if g.vulkan_index is None:
                return [], "Vulkan device indexes are unknown until vulkaninfo runs on the host"
            nodes = _render(g, gpu.device_nodes)
            if g.vendor == "nvidia":
                nodes += nvidia_nodes([g])
            slots.append(Slot(f"vulkan:{g.vulkan_index}", {"GGML_VK_VISIBLE_DEVICES": str(g.vulkan_index)}, nodes,
                              vram))  # fmt: skip
    return slots, ""


@dataclass(frozen=True)
class Layout:
    """The instances of a host and why."""

    instances: tuple[Instance, ...]
    reason: str
    mode: str  # "one", "per-gpu" or "replicas"

    @property
    def templated(self) -> bool:
        return self.instances[0].index is not None


def recorded_instances(record: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """The instances a deploy record lists; None for a record that predates instances or no record."""
    if not record or not isinstance(record.get("instances"), list):
        return None
    return [i for i in record["instances"] if isinstance(i, dict)]


def _need(model_bytes: int, ctx_size: int) -> tuple[int, str]:
    tokens = ctx_size or UNKNOWN_CTX_TOKENS
    need = int(model_bytes * 1.1) + tokens * KV_BYTES_PER_TOKEN + COMPUTE_BUFFER_BYTES
    how = f"model {model_bytes / GIB:.1f} GiB + 10% + {tokens} tokens of context x 128 KiB + 0.5 GiB buffers"
    return need, how


def choose_layout(
    value: str | int | None,
    *,
    gpu: GpuChoice,
    facts: HostFacts,
    threads: int,
    ctx_size: int,
    model_bytes: int,
    port: int,
    unit_name: str,
    recorded: Mapping[str, Any] | None = None,
    wanted_devices: Any = (),
) -> Layout:
    """The host's instances and the reason; raises :class:`SettingsError` naming ``server_instances``."""
    devices = tuple(_label(g, gpu.backend) for g in gpu.devices) or ("cpu",)
    whole = Instance(None, port, threads, dict(gpu.env), tuple(gpu.device_nodes), devices, tuple(gpu.tensor_split))
    slots, why_not = device_slots(gpu, facts, wanted_devices)
    shown = "None (auto)" if value is None else repr(value)

    def one(why: str) -> Layout:
        return Layout((whole,), f"one server: {why}", "one")

    if value is None and recorded and recorded_instances(recorded) is None:
        return one("this host was deployed before lemfleet had instances, so it keeps its layout until "
                   "server_instances is set for it")  # fmt: skip
    if value == "one":
        return one("set by server_instances")
    if isinstance(value, int):
        return _replicas(value, whole, slots, gpu, unit_name, port, threads)
    # auto (set or by default), per-gpu
    if value == "per-gpu" and why_not and gpu.backend != "cpu":
        raise SettingsError([f"server_instances='per-gpu' is not possible on this host: {why_not}; accepted: "
                             "'one', 'auto' or an integer"], facts.hostname)  # fmt: skip
    if gpu.backend == "cpu":
        return one(f"server_instances={shown}: the plan serves on the CPU (an integer sets replicas)")
    if len(slots) < 2:
        return one(f"server_instances={shown}: {why_not or f'{len(slots)} device to serve on'}")
    labels = ", ".join(s.label for s in slots)
    if value == "per-gpu":
        return _per_gpu(
            slots, gpu, unit_name, port, threads, f"one server per device ({labels}): set by server_instances"
        )
    need, how = _need(model_bytes, ctx_size)
    sizes = [s.vram_bytes for s in slots]
    if not model_bytes or not all(sizes):
        return one(f"server_instances={shown}: the model's size or a device's memory is unknown, so whether "
                   "the model fits one device cannot be told (per-gpu sets it)")  # fmt: skip
    smallest = min(s or 0 for s in sizes)
    if need > smallest:
        return one(f"server_instances={shown}: {need / GIB:.1f} GiB ({how}) does not fit the smallest of the "
                   f"{len(slots)} devices ({smallest / GIB:.1f} GiB)")  # fmt: skip
    return _per_gpu(slots, gpu, unit_name, port, threads,
                    f"one server per device ({labels}): server_instances={shown}, {len(slots)} devices and "
                    f"{need / GIB:.1f} GiB ({how}) fits the smallest ({smallest / GIB:.1f} GiB)")  # fmt: skip


def _label(gpu: Gpu, backend: str) -> str:
    return f"{backend}:{gpu.vulkan_index if backend == 'vulkan' else gpu.index}"


def _check_room(count: int, unit_name: str, port: int) -> None:
    problems = []
    if "@" in unit_name:
        problems.append(f"server_unit_name={unit_name!r} holds '@', which a template unit's name may not; "
                        f"accepted with {count} instances: a name without '@'")  # fmt: skip
    if port + count - 1 > 65535:
        problems.append(f"server_port={port} leaves no room for {count} instances (ports {port} to "
                        f"{port + count - 1}); accepted: a port of at most {65536 - count}")  # fmt: skip
    if problems:
        raise SettingsError(problems)


def _instance_env(gpu: GpuChoice, slot: Slot) -> dict[str, str]:
    env = {k: v for k, v in gpu.env.items() if k not in VISIBLE}
    env.update(slot.env)
    return env


def _per_gpu(slots: list[Slot], gpu: GpuChoice, unit_name: str, port: int, threads: int, reason: str) -> Layout:
    _check_room(len(slots), unit_name, port)
    each = max(1, threads // len(slots))
    instances = tuple(
        Instance(i, port + i, each, _instance_env(gpu, s), s.nodes, (s.label,)) for i, s in enumerate(slots)
    )
    if any("char-drm" in s.nodes for s in slots):
        reason += "; the render nodes are unknown until the KFD topology is read, so each may open any (char-drm)"
    return Layout(instances, f"{reason}; {each} thread(s) each", "per-gpu")


def _replicas(count: int, whole: Instance, slots: list[Slot], gpu: GpuChoice, unit_name: str, port: int,
              threads: int) -> Layout:  # fmt: skip
    _check_room(count, unit_name, port)
    each = max(1, threads // count)
    split = f"the {threads} thread(s) split, {each} each" + (" (more replicas than threads)" if threads < count else "")
    if slots:
        instances = tuple(
            Instance(i, port + i, each, _instance_env(gpu, slots[i % len(slots)]), slots[i % len(slots)].nodes,
                     (slots[i % len(slots)].label,))
            for i in range(count)
        )  # fmt: skip
        where = f"replica i on device i modulo {len(slots)}"
    else:
        instances = tuple(
            Instance(i, port + i, each, dict(whole.env), whole.device_nodes, whole.devices, whole.tensor_split)
            for i in range(count)
        )
        where = "every replica on the plan's devices" if gpu.backend != "cpu" else "on the CPU"
    return Layout(instances, f"{count} replicas, set by server_instances: {where}, {split}", "replicas")
