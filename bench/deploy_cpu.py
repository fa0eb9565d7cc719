"""Issue bars for the CPU rollout, measured side by side on test-bed hosts.

    python bench/deploy_cpu.py noop      # no-op rerun vs a bare `pyinfra <host> exec -- true` (bar: <= 3x)
    python bench/deploy_cpu.py serving   # time to serving on a bare host, build reused (bar: <= 60 s overhead)
    python bench/deploy_cpu.py decode    # decode tokens/s, deployed service vs the same binary by hand (bar: >= 0.9x)

Needs a test bed with a deployed host (tb1) for `noop` and `decode`; `serving`
boots one extra host and removes it afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import PROJECT, deploy_args, median, pyinfra

sys.path.insert(0, str(PROJECT))

from lemfleet import testbed
from lemfleet.demo import demo_model
from lemfleet.smoke import smoke_check
from lemfleet.testbed.paths import SSH_CONFIG


def model_data(model: Path) -> list[str]:
    return ["model_source=local", f"model_path={model}"]


def bench_noop(host: str, model: Path, rounds: int) -> None:
    bare, rerun = [], []
    _, rc, out = pyinfra(*deploy_args(host, *model_data(model)))  # bring the host to the wanted state first
    assert rc == 0, out[-2000:]
    for _ in range(rounds):
        seconds, rc, out = pyinfra("inventories/testbed.py", "--limit", host, "-y", "exec", "--", "true")
        assert rc == 0, out[-2000:]
        bare.append(seconds)
        seconds, rc, out = pyinfra(*deploy_args(host, *model_data(model)))
        assert rc == 0, out[-2000:]
        rerun.append(seconds)
    ratio = median(rerun) / median(bare)
    print(f"bare exec -- true: median {median(bare):.2f} s  {[round(s, 2) for s in bare]}")
    print(f"no-op deploy rerun: median {median(rerun):.2f} s  {[round(s, 2) for s in rerun]}")
    print(f"ratio: {ratio:.2f}x (bar: <= 3x)")


def bench_serving(model: Path) -> None:
    (rec,) = testbed.add(1)
    try:
        started = time.monotonic()
        _seconds, rc, out = pyinfra(*deploy_args(rec.name, *model_data(model)))
        assert rc == 0, out[-3000:]
        compiled = "is in the controller's cache" in out  # the line the host that compiled logs
        how = "compiled" if compiled else "build reused from the controller cache: all of it is overhead"
        print(f"bare host {rec.name} to a passing smoke test: {time.monotonic() - started:.1f} s ({how})")
        print("bar: <= 60 s of overhead beyond the compile")
    finally:
        testbed.remove(rec.name)


def tokens_per_s(base: str, rounds: int, max_tokens: int) -> list[float]:
    return [
        float(smoke_check(base, max_tokens=max_tokens, health_timeout=120).decode_tokens_per_s or 0)
        for _ in range(rounds)
    ]


def bench_decode(host: str, rounds: int, layers: int, embd: int) -> None:
    from lemfleet.testbed.tinygguf import TinyShape, write_tiny_gemma3

    vocab = demo_model().parent / "ggml-vocab-llama-spm.gguf"
    model = demo_model().parent / f"bench-gemma3-{layers}x{embd}.gguf"
    if not model.exists():
        write_tiny_gemma3(
            model,
            vocab_gguf=vocab,
            shape=TinyShape(layers=layers, embd=embd, heads=8, kv_heads=2),
            name=f"bench-gemma3-{layers}x{embd}",
        )
    _seconds, rc, out = pyinfra(*deploy_args(host, *model_data(model)))
    assert rc == 0, out[-3000:]
    rec = testbed.find(host)
    env = testbed.ssh(rec, "grep ^LEMFLEET_MODEL= /etc/lemfleet/lemfleet-llama.env")
    path = env.split("=", 1)[1].strip().strip('"')  # the env file double-quotes every value
    # The deployed service, reached through an SSH forward by the smoke client.
    import subprocess

    fwd = subprocess.Popen(
        ["ssh", "-F", str(SSH_CONFIG), "-N", "-L", "18080:127.0.0.1:8080", "-L", "18081:127.0.0.1:8081", host]
    )
    try:
        time.sleep(1.5)
        deployed = tokens_per_s("http://127.0.0.1:18080", rounds, 64)
        testbed.ssh(rec, "systemctl stop lemfleet-llama")
        # The same binary, by hand, with upstream defaults beyond the model and port.
        testbed.ssh(
            rec,
            f"nohup /opt/lemfleet/llama.cpp/current/bin/llama-server -m {path} --port 8081 > /tmp/by-hand.log 2>&1 &",
        )
        by_hand = tokens_per_s("http://127.0.0.1:18081", rounds, 64)
    finally:
        testbed.ssh(rec, "pkill -f 'llama-server -m' ; systemctl start lemfleet-llama", check=False)
        fwd.terminate()
    d, h = statistics.median(deployed), statistics.median(by_hand)
    print(f"model {model.name} ({model.stat().st_size / 1e6:.1f} MB), {rounds} rounds of 64 tokens each")
    print(f"deployed service: median {d:.1f} tokens/s  {[round(x, 1) for x in deployed]}")
    print(f"same binary by hand, upstream defaults: median {h:.1f} tokens/s  {[round(x, 1) for x in by_hand]}")
    print(f"ratio: {d / h:.2f}x (bar: >= 0.9x)")
    # Back to the demo model for whatever runs next.
    pyinfra(*deploy_args(host, *model_data(demo_model())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("noop", "serving", "decode"))
    parser.add_argument("--host", default="tb1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--embd", type=int, default=512)
    args = parser.parse_args()
    if args.what == "noop":
        bench_noop(args.host, demo_model(), args.rounds)
    elif args.what == "serving":
        bench_serving(demo_model())
    else:
        bench_decode(args.host, args.rounds, args.layers, args.embd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
