"""``lemfleet demo``: the whole rollout on a local test-bed host, from nothing to a tested endpoint.

It boots a test-bed host (a real systemd host in a network namespace) unless
one is up, and runs the real deploy on it with ``pyinfra inventories/testbed.py
deploy.py``: llama.cpp from the pinned ``llama-cpp-python`` sdist, and a small
real ``gemma3`` GGUF generated on the spot (this machine may not reach the
Hugging Face hub). With ``--hub-model`` it deploys the real LEM-Gemma3-1B
from the hub (or the mirror in ``HF_ENDPOINT``) instead. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

from lemfleet import testbed
from lemfleet.roles.llama_sources import CACHE, sdist_source
from lemfleet.roles.settings_check import validate
from lemfleet.testbed.paths import SSH_CONFIG
from lemfleet.testbed.tinygguf import write_tiny_gemma3

HELP = "deploy to a local test-bed host and smoke-test it (needs root)"
PROJECT = Path(__file__).resolve().parent.parent
VOCAB_MEMBER = "vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hub-model",
        action="store_true",
        help="deploy LEM-Gemma3-1B (Q4_K_M) from the hub instead of a generated model",
    )
    parser.add_argument(
        "--suite",
        choices=("bookworm", "trixie"),
        default="bookworm",
        help="Debian release of the test-bed host, when one is booted",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra pyinfra --data settings, e.g. server_ctx_size=2048",
    )


def vocab_path() -> Path:
    """llama.cpp's SPM test vocab, taken once from the pinned llama-cpp-python sdist (fetched with pip)."""
    vocab = CACHE / "demo" / "ggml-vocab-llama-spm.gguf"
    if vocab.exists():
        return vocab
    source = sdist_source(validate({}))
    assert source.archive is not None
    vocab.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source.archive) as tar:
        member = tar.getmember(f"{source.archive.name.removesuffix('.tar.gz')}/{VOCAB_MEMBER}")
        extracted = tar.extractfile(member)
        assert extracted is not None
        partial = vocab.with_suffix(".partial")
        partial.write_bytes(extracted.read())
        partial.replace(vocab)
    return vocab


def demo_model() -> Path:
    """A tiny gemma3 GGUF with a Gemma chat template, made once."""
    out = CACHE / "demo" / "lemfleet-tiny-gemma3.gguf"
    if not out.exists():
        write_tiny_gemma3(out.with_suffix(".partial"), vocab_gguf=vocab_path())
        out.with_suffix(".partial").replace(out)
    return out


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("lemfleet demo: the test bed needs root (network namespaces and systemd-nspawn)", file=sys.stderr)
        return 2
    hosts = testbed.load()
    target = hosts[0] if hosts else testbed.add(1, args.suite)[0]
    data = list(args.data)
    if not args.hub_model:
        data += ["model_source=local", f"model_path={demo_model()}"]
    cmd = [sys.executable, "-m", "pyinfra", "-y", "inventories/testbed.py", "deploy.py", "--limit", target.name]
    for item in data:
        cmd += ["--data", item]
    print("+ " + shlex.join(cmd[2:]), flush=True)
    status = subprocess.call(cmd, cwd=PROJECT)
    result_file = PROJECT / "out" / "smoke" / f"{target.name}.json"
    if status != 0 or not result_file.exists():
        print(f"lemfleet demo: the deploy to {target.name} failed (exit {status})", file=sys.stderr)
        return 1
    result = json.loads(result_file.read_text())
    print(f"\nsmoke test on {target.name}: {'passed' if result['ok'] else 'FAILED'}")
    for step in result["steps"]:
        print(f"  {step['name']:<8} {step['status']:<7} {step['message']}")
    print(f"  time to first token {result['time_to_first_token_s']} s, decode {result['decode_tokens_per_s']} tokens/s")
    body = json.dumps({"model": result["model"], "messages": [{"role": "user", "content": "Hello!"}]})
    print("\nTry it (the server listens on the host's loopback, so go through SSH):")
    print(
        f"  ssh -F {SSH_CONFIG} {target.name} "
        + shlex.quote(
            f"curl -s http://127.0.0.1:8080/v1/chat/completions "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
        )
    )
    return 0 if result["ok"] else 1
