"""Serving gap of a test-bed host during a model switch (issue bar: <= the new model's load time + 2 s).

    python bench/serving_gap.py [--host tb1] [--rounds 3]

The host switches between two models (the demo's tiny GGUF and a larger
8-layer one) with a plain ``pyinfra ... deploy.py``. A poller on the host
asks ``/health`` every 50 ms and stamps each answer with the host's
monotonic clock; the gap is the time from the last 200 before the switch to
the first 200 after it. The new model's load time is from the new server's
start (systemd's ``ExecMainStartTimestampMonotonic``) to that first 200, so
gap - load is what the switch itself costs: stopping the old server, the
gate's checks and systemd's start.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import PROJECT, deploy_args, median, pyinfra

sys.path.insert(0, str(PROJECT))

from lemfleet import testbed
from lemfleet.demo import demo_model
from lemfleet.testbed.paths import SSH_CONFIG
from lemfleet.testbed.tinygguf import TinyShape, write_tiny_gemma3

POLL = (
    "while :; do c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.0.0.1:8080/health); "
    'echo "$(cut -d" " -f1 /proc/uptime) $c"; sleep 0.05; done'
)


def larger_model() -> Path:
    model = demo_model().parent / "bench-gemma3-8x512.gguf"
    if not model.exists():
        shape = TinyShape(layers=8, embd=512, heads=8, kv_heads=2)
        vocab = demo_model().parent / "ggml-vocab-llama-spm.gguf"
        write_tiny_gemma3(model, vocab_gguf=vocab, shape=shape, name="bench-gemma3-8x512")
    return model


def switch(host: str, model: Path) -> tuple[float, float, float]:
    """Deploy ``model`` while polling; (gap s, load s, deploy s)."""
    poller = subprocess.Popen(["ssh", "-F", str(SSH_CONFIG), host, POLL], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        seconds, rc, out = pyinfra(*deploy_args(host, "model_source=local", f"model_path={model}"))
        assert rc == 0, out[-3000:]
        time.sleep(1.0)
    finally:
        poller.terminate()
    samples = [(float(t), code) for t, code in (line.split() for line in poller.stdout or [] if len(line.split()) == 2)]
    down = [i for i, (_, code) in enumerate(samples) if code != "200"]
    assert down, "the health poller never saw the server down: nothing switched?"
    last_up = samples[down[0] - 1][0]
    first_up = next(t for t, code in samples[down[-1] :] if code == "200")
    rec = testbed.find(host)
    start_us = int(testbed.ssh(rec, "systemctl show -p ExecMainStartTimestampMonotonic --value lemfleet-llama"))
    return first_up - last_up, first_up - start_us / 1e6, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="tb1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = [demo_model(), larger_model()]
    _, rc, out = pyinfra(*deploy_args(args.host, "model_source=local", f"model_path={models[0]}"))
    assert rc == 0, out[-3000:]
    over = []
    for round_ in range(args.rounds):
        for model in (models[1], models[0]):
            gap, load, seconds = switch(args.host, model)
            over.append(gap - load)
            print(f"round {round_ + 1}: switch to {model.name}: gap {gap:.2f} s, new model up after {load:.2f} s "
                  f"from its start, switch cost {gap - load:.2f} s (deploy {seconds:.1f} s)")  # fmt: skip
    print(f"gap beyond the load time: median {median(over):.2f} s, max {max(over):.2f} s (bar: <= 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
