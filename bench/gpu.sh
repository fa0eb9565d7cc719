#!/usr/bin/env bash
# Decode speed on a real GPU machine next to its memory-bandwidth bound (issue bar: >= 0.5x the bound).
#
#   sudo bench/gpu.sh [pyinfra options]     e.g. --data model_source=local --data model_path=/srv/m.gguf
#
# Sets up .venv, deploys this machine with `pyinfra @local deploy.py -y` (drivers, llama-server built for the
# detected GPU, the model, the service, the smoke test), then prints the smoke test's decode tokens/s from
# out/smoke/@local.json next to bandwidth / model bytes: decoding one token reads every weight once, so that is
# the most any GPU can decode. Bandwidth: GPU_BANDWIDTH_GBS if set, else the datasheet figure for the GPU's name,
# else nvidia-smi's memory bus width x max memory clock x 2. SMOKE_TOKENS (default 256) sets the tokens the smoke
# test decodes. On a machine with no internet, pass a local model and source (model_source=local, model_path,
# llama_cpp_source=tarball, llama_cpp_tarball, llama_cpp_tarball_sha256) as --data options.
# Exit status: 0 at or above the bar, 2 below it, 1 when the deploy or smoke test failed or the bandwidth is unknown.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "bench/gpu.sh: deploying @local installs packages and a systemd unit; run it as root" >&2
    exit 1
fi
[ -x .venv/bin/python ] || ./scripts/setup.sh
result=out/smoke/@local.json
rm -f "$result"
if ! .venv/bin/python -m pyinfra @local deploy.py -y --data "smoke_max_tokens=${SMOKE_TOKENS:-256}" "$@"; then
    echo "bench/gpu.sh: the deploy failed; see pyinfra's output above" >&2
    exit 1
fi
exec .venv/bin/python - "$result" <<'PYTHON'
import json
import os
import re
import subprocess
import sys
from pathlib import Path

# Peak memory bandwidth in GB/s from the vendors' datasheets; the more specific names first.
DATASHEET = (
    ("H100 PCIe", 2000),
    ("H100 NVL", 3900),
    ("H100", 3350),  # H100 SXM5 80GB HBM3
    ("H200", 4800),  # SXM and NVL
    ("MI300X", 5300),
    ("RTX 4090", 1008),
)


def query(*command: str) -> str | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def gpu_names() -> list[str]:
    nvidia = query("nvidia-smi", "--query-gpu=name", "--format=csv,noheader")
    if nvidia:
        return [line.strip() for line in nvidia.splitlines()]
    return re.findall(r"MARKET_NAME:\s*(.+?)\s*$", query("amd-smi", "static", "--asic") or "", re.MULTILINE)


def bandwidth(name: str) -> tuple[float, str]:
    """(GB/s, where the figure came from) for one GPU."""
    if os.environ.get("GPU_BANDWIDTH_GBS"):
        return float(os.environ["GPU_BANDWIDTH_GBS"]), "GPU_BANDWIDTH_GBS"
    for key, gbs in DATASHEET:
        if key.lower() in name.lower():
            return gbs, f"datasheet, {key}"
    fields = query("nvidia-smi", "--query-gpu=memory.bus_width,clocks.max.memory", "--format=csv,noheader,nounits")
    try:  # an nvidia-smi without these fields fails; a GPU may say [N/A]
        bus_bits, mem_mhz = (float(v) for v in (fields or "").splitlines()[0].split(","))
    except (IndexError, ValueError):
        sys.exit(f"bench/gpu.sh: no bandwidth known for {name!r}; set GPU_BANDWIDTH_GBS (GB/s)")
    return bus_bits / 8 * mem_mhz * 2 / 1000, "nvidia-smi: bus width x max memory clock x 2"


smoke = json.loads(Path(sys.argv[1]).read_text())
if not smoke.get("ok") or not smoke.get("decode_tokens_per_s"):
    failed = "; ".join(f"{s['name']}: {s['message']}" for s in smoke.get("steps", []) if s["status"] == "failed")
    print(f"bench/gpu.sh: the smoke test did not pass: {failed or 'no decode figure'}", file=sys.stderr)
    sys.exit(1)
names = gpu_names()
name = os.environ.get("GPU_NAME") or (names[0] if names else "unknown GPU")
gbs, where = bandwidth(name)
model_bytes = Path(smoke["model_path"]).stat().st_size
decode = float(smoke["decode_tokens_per_s"])
bound = gbs * 1e9 / model_bytes  # tokens/s if every token streams every weight once at peak bandwidth
ratio = decode / bound
print(f"GPU      {name} ({len(names) or '?'} detected): {gbs:.0f} GB/s ({where})")
print(f"model    {smoke['model_path']}: {model_bytes / 1e6:.1f} MB")
print(f"backend  {smoke.get('backend')}, build {smoke.get('build_info')}")
print(f"decode   {decode:.1f} tokens/s ({smoke.get('completion_tokens')} tokens, smoke test), "
      f"first token after {smoke.get('time_to_first_token_s')} s")
print(f"bound    {bound:.1f} tokens/s (bandwidth / model bytes)")
verdict = "meets" if ratio >= 0.5 else "BELOW"
print(f"ratio    {ratio:.2f}x the bound: {verdict} the 0.5x bar")
sys.exit(0 if ratio >= 0.5 else 2)
PYTHON
