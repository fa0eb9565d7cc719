"""Broken GPU drivers, by class: each diagnosis quotes its evidence and says what fixes it.

Two kinds of evidence are read:

- the words of the tools and the kernel log (``tool_faults``): nvidia-smi's
  NVML errors, rocminfo's KFD errors, amdgpu's and NVRM's kernel messages;
- the facts themselves (``host_faults``): a GPU held by nouveau or vfio-pci,
  ``/dev/kfd`` missing beside render nodes, or device nodes without group access.

Only classes the evidence proves are named; anything else stays a plain probe
error. The plan shows every diagnosis, and refuses a CPU plan that would hide one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from lemfleet.roles.hostinfo import FaultKind, Gpu, GpuFault, GpuRuntime, Vendor

_RELOAD_NVIDIA = "rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia"

# (tool, pattern, kind, vendor, action); the first matching pattern of a line wins.
_RULE_TEXT: tuple[tuple[str, str, FaultKind, Vendor, str], ...] = (
    ("nvidia-smi", r"Driver/library version mismatch", "version-mismatch", "nvidia",
     "the loaded nvidia kernel module is older or newer than the installed libraries (an "
     f"upgrade replaced them under a running driver): reload the modules ({_RELOAD_NVIDIA}) "
     "or reboot"),
    ("nvidia-smi", r"couldn't communicate with the NVIDIA driver", "module-not-loaded", "nvidia",
     "the nvidia kernel module is not loaded: modprobe nvidia; if that fails it is not built "
     "for the running kernel (install linux-headers-$(uname -r) and rebuild the DKMS module, "
     "or boot the kernel it was built for)"),
    ("nvidia-smi", r"^No devices were found", "no-devices", "nvidia",
     "the driver is loaded but initialised no GPU: read the kernel log for NVRM errors, check "
     "that vfio-pci does not hold the GPU and the firmware settings (Above 4G decoding, "
     "Resizable BAR)"),
    ("nvidia-smi", r"Failed to initialize NVML: (Unknown Error|Insufficient Permissions)",
     "device-nodes", "nvidia",
     "NVML cannot open /dev/nvidia*: give the process the device nodes (in a container pass "
     "/dev/nvidiactl, /dev/nvidia-uvm and /dev/nvidiaN; for a service, DeviceAllow)"),
    ("nvidia-smi", r"couldn't find libnvidia-ml\.so", "driver-missing", "nvidia",
     "the driver's userspace (libnvidia-ml) is missing: install the NVIDIA driver package "
     "matching the kernel module"),
    ("rocminfo", r"ROCk module is NOT loaded", "module-not-loaded", "amd",
     "the amdgpu kernel module is not loaded: modprobe amdgpu, and read the kernel log for "
     "its errors (missing firmware, amdgpu blacklisted, nomodeset on the kernel command line)"),
    ("rocminfo", r"Unable to open /dev/kfd read-write: (Permission denied|Operation not permitted)",
     "device-nodes", "amd",
     "/dev/kfd and /dev/dri/renderD* are not accessible to this user: add the service user "
     "to the render and video groups (the drivers step does) and check their mode "
     "(udev: KERNEL==\"kfd\", GROUP=\"render\", MODE=\"0660\")"),
    ("rocminfo", r"Unable to open /dev/kfd read-write: (.+)", "device-nodes", "amd",
     "/dev/kfd is there but KFD refused to open it: in a container pass /dev/kfd and "
     "/dev/dri with their cgroup access; on the host read the kernel log ('not supported "
     "in kfd' means the GPU has no compute support)"),
    ("kernel-log", r"Direct firmware load for (amdgpu/\S+) failed", "firmware-missing", "amd",
     "install the GPU firmware (Debian: firmware-amd-graphics from non-free-firmware; "
     "Ubuntu: linux-firmware) and reboot"),
    ("kernel-log", r"NVRM: .*No firmware image found", "firmware-missing", "nvidia",
     "install the GSP firmware package of the driver branch that the kernel module is from"),
    ("kernel-log", r"NVRM: API mismatch", "version-mismatch", "nvidia",
     f"kernel module and libraries differ: reload the modules ({_RELOAD_NVIDIA}) or reboot"),
    ("kernel-log", r"NVRM: .*RmInitAdapter failed", "no-devices", "nvidia",
     "the driver could not initialise the GPU: check the firmware settings (Above 4G "
     "decoding, Resizable BAR), power cabling, and that the driver supports this GPU"),
    ("kernel-log", r"kfd kfd: amdgpu: (\S+) +not supported in kfd", "unsupported", "amd",
     "this GPU has no ROCm compute support in the kernel: serve it with Vulkan or on the CPU"),
)  # fmt: skip
_RULES: tuple[tuple[str, re.Pattern[str], FaultKind, Vendor, str], ...] = tuple(
    (tool, re.compile(pattern, re.IGNORECASE), kind, vendor, action)
    for tool, pattern, kind, vendor, action in _RULE_TEXT
)

# A firmware line is only a fault when the device then failed to initialise:
# amdgpu also logs optional firmware (vega20_ta.bin) that it works without.
_FATAL = re.compile(r"Fatal error during GPU init|probe of \S+ failed|\*ERROR\* .*[Ff]ailed", re.IGNORECASE)


def tool_faults(tool: str, lines: Iterable[str]) -> tuple[GpuFault, ...]:
    """The driver faults a tool's (or the kernel log's) words prove, each quoting its line."""
    text = [line.strip() for line in lines if line.strip()]
    fatal = any(_FATAL.search(line) for line in text)
    found: list[GpuFault] = []
    for line in text:
        for rule_tool, pattern, kind, vendor, action in _RULES:
            if rule_tool != tool or not pattern.search(line):
                continue
            if kind == "firmware-missing" and vendor == "amd" and not fatal:
                break
            if kind == "version-mismatch" and (library := next((t for t in text if "NVML library version" in t), "")):
                line = f"{line} / {library}"
            if not any(f.kind == kind and f.vendor == vendor for f in found):
                found.append(GpuFault(kind, vendor, tool, line, action))
            break
    return tuple(found)


def _node_faults(gpus: Sequence[Gpu], runtime: GpuRuntime) -> list[GpuFault]:
    faults = []
    for entry in runtime.device_node_modes:
        path, mode, group = entry.split()
        gpu_node = path == "/dev/kfd" or path.startswith("/dev/dri/renderD")
        if gpu_node and len(mode) >= 2 and int(mode[-2]) & 6 != 6 and int(mode[-1]) & 6 != 6:
            faults.append(
                    GpuFault("device-nodes", "amd", "device-nodes", entry,
                             f"{path} is mode {mode}, group {group}: members of render cannot open it; "
                             "restore udev's rule (GROUP=\"render\", MODE=\"0660\")")
                )  # fmt: skip
    amd_bound = [g for g in gpus if g.vendor == "amd" and g.kernel_driver == "amdgpu" and not g.integrated]
    render = any(n.startswith("/dev/dri/renderD") for n in runtime.device_nodes)
    if amd_bound and render and "/dev/kfd" not in runtime.device_nodes:
        faults.append(
            GpuFault("device-nodes", "amd", "device-nodes", "no /dev/kfd",
                     "amdgpu drives the GPU but /dev/kfd is missing: the kernel lacks KFD "
                     "(CONFIG_HSA_AMD) or, in a container, /dev/kfd was not passed in")
        )  # fmt: skip
    return faults


def host_faults(gpus: Sequence[Gpu], runtime: GpuRuntime) -> tuple[GpuFault, ...]:
    """Faults the merged facts prove: GPUs held by the wrong driver, and device nodes."""
    faults = _node_faults(gpus, runtime)
    for gpu in gpus:
        where = f"{gpu.pci_slot or gpu.pci_id} {gpu.name}"
        if gpu.vendor == "nvidia" and gpu.kernel_driver == "nouveau":
            faults.append(
                GpuFault("module-not-loaded", "nvidia", "lspci", f"{where}: Kernel driver in use: nouveau",
                         "nouveau holds the GPU: blacklist nouveau and reboot (the drivers step does)")
            )  # fmt: skip
        elif gpu.kernel_driver == "vfio-pci":
            faults.append(
                GpuFault("module-not-loaded", gpu.vendor, "lspci", f"{where}: Kernel driver in use: vfio-pci",
                         "vfio-pci holds the GPU for passthrough to a VM: release it (driverctl "
                         "unset-override, or drop it from vfio-pci.ids) to serve on this host")
            )  # fmt: skip
    return tuple(faults)
