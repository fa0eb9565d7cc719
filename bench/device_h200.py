"""lemfleet's own path on one real GPU machine, without SSH or systemd: probe, plan, build, serve, smoke.

A deploy runs each step on a host over SSH and parses the output on the controller. A lent GPU machine
(bench/device_h200.sh) has no sshd, no systemd and no internet, so this runs the same code in one process on
the machine itself: the host and GPU probe commands (``HostProbe``, ``GpuProbe``) through ``sh``, their
parsers and ``plan_host``, the build shell ``build_script`` renders for the plan (the pinned llama.cpp,
exactly the planned cmake flags), the server's command line from the unit and environment file the server
step renders, lemfleet's smoke client, and the gate's offload check on the server's log (verbosity 4).
What differs from a deploy: the server runs as root without the unit's sandbox, and the model is a random-
weight gemma3 GGUF from ``lemfleet.testbed.tinygguf`` (the hub is out of reach).

    python bench/device_h200.py --source SRC.tar.gz --source-id ID --out DIR [--binary PATH] [--gpu-probe FILE]

Writes to DIR: tools.txt (raw probe and tool outputs), plan.json, build.log, server.log, smoke.json,
summary.json. ``--binary`` skips the build (a CPU dry run with a cached build); ``--gpu-probe`` plans from
recorded GPU probe output instead of this machine's (nothing is built or served then).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
STARTED = time.monotonic()
# Each raw tool output a fixture can be made of, with the command that printed it.
RAW_TOOLS = {
    "nvidia-smi": "nvidia-smi",
    "nvidia-smi-list": "nvidia-smi -L",
    "nvidia-smi-query": "",  # QUERY_COMMAND, filled in at run time
    "lspci": "lspci -Dnnk",
    "nvcc": "nvcc --version",
    "cmake": "cmake --version",
}


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def shell(command: str, timeout: float = 120) -> tuple[int, str]:
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def probe_commands(bundle: Path | None) -> dict[str, str]:
    """The host probe, the GPU probe and nvidia-smi's query, as lemfleet runs them (or as the bundle has them)."""
    try:
        from lemfleet.roles.detect import TARGET_PATHS
        from lemfleet.roles.facts.gpu import PROBE_COMMAND
        from lemfleet.roles.facts.gpu_nvidia import QUERY_COMMAND
        from lemfleet.roles.facts.host import probe_command
    except ImportError:
        if bundle is None:
            raise
        return dict(json.loads(bundle.read_text())["probes"])
    return {"host": probe_command(TARGET_PATHS), "gpu": PROBE_COMMAND, "query": QUERY_COMMAND.removesuffix(" 2>&1")}


def probe(out: Path, commands: dict[str, str]) -> tuple[list[str], list[str]]:
    """The host and GPU probes' output (as a deploy gathers them) and the raw tools, saved to tools.txt."""
    _, host_out = shell(commands["host"])
    _, gpu_out = shell(commands["gpu"])
    tools = {**RAW_TOOLS, "nvidia-smi-query": commands["query"]}
    with (out / "tools.txt").open("w") as f:
        f.write(f"@@tool:host-probe\n{host_out}\n@@tool:gpu-probe\n{gpu_out}\n")
        for name, command in tools.items():
            rc, text = shell(f"{command} 2>&1")
            f.write(f"@@tool:{name} rc={rc} $ {command}\n{text}\n")
    return host_out.splitlines(), gpu_out.splitlines()


def load_tinygguf() -> Any:
    """lemfleet.testbed.tinygguf, loaded from its file: the test bed package's own imports are not needed."""
    path = PROJECT / "lemfleet" / "testbed" / "tinygguf.py"
    spec = importlib.util.spec_from_file_location("lemfleet_tinygguf", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def make_model(src: Path, path: Path, layers: int, embd: int) -> Path:
    if path.is_file():
        return path
    try:
        import gguf  # noqa: F401
    except ImportError:  # the pinned llama.cpp's own copy of the package
        sys.path.insert(0, str(src / "gguf-py"))
    tiny = load_tinygguf()
    shape = tiny.TinyShape(layers=layers, embd=embd, heads=8, kv_heads=4)
    return Path(tiny.write_tiny_gemma3(path, src / "models" / "ggml-vocab-llama-spm.gguf", shape=shape,
                                       name=f"bench-gemma3-{layers}x{embd}"))  # fmt: skip


def make_plan(host_lines: list[str], gpu_lines: list[str], model: Path, source_id: str, jobs: int) -> dict[str, Any]:
    """The plan, build id and build shell lemfleet makes for this host (all pure functions)."""
    from lemfleet.plan_fleet import model_for
    from lemfleet.roles.detect import facts_from_sections
    from lemfleet.roles.facts.gpu import parse_probe
    from lemfleet.roles.facts.host import split_sections
    from lemfleet.roles.llama_cpp import build_id, build_script, installed_binary, source_dir
    from lemfleet.roles.llama_sources import Source
    from lemfleet.roles.plan import plan_host
    from lemfleet.roles.settings_check import validate

    gpus, runtime = parse_probe(gpu_lines)
    facts = facts_from_sections(split_sections(host_lines), gpus, runtime)
    settings = validate({"model_source": "local", "model_path": str(model)}, facts.hostname)
    model_info, _ = model_for(settings)
    plan = plan_host(facts, settings, model_info)
    source = Source(method="pypi-sdist", source_id=source_id)
    bid = build_id(source, plan)
    return {
        "plan": plan,
        "settings": settings,
        "facts": facts,
        "source": source,
        "build_id": bid,
        "src": source_dir(source),
        "binary": installed_binary(bid),
        "script": build_script(bid, source_dir(source), plan, source, jobs),
    }


def build(made: dict[str, Any], tarball: Path, out: Path, limit: float) -> tuple[bool, float, str]:
    """Unpack the pinned source where the deploy puts it and run the rendered build shell."""
    try:
        from lemfleet.roles.build_ops import BUILD_USER
    except ImportError:  # a bundle run (see emit_bundle): the account the build step uses
        BUILD_USER = "lemfleet-build"
    src = Path(made["src"])
    src.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(src)], check=True)
    script = made["script"]
    rc, text = shell(f"id -u {BUILD_USER} || useradd --system --no-create-home --shell /usr/sbin/nologin {BUILD_USER}")
    if shutil.which("runuser") is None:
        say("no runuser here; the build runs as root")
        script = script.replace(f"runuser -u {BUILD_USER} -- ", "")
    elif rc:
        say(f"no account {BUILD_USER} ({text.strip()[-200:]}); the build runs as root")
        script = script.replace(f"runuser -u {BUILD_USER} --", "runuser -u root --")
    if rc or shutil.which("runuser") is None:
        script = script.replace(f"-o {BUILD_USER} -g {BUILD_USER}", "-o root -g root")
    (out / "build.sh").write_text(script + "\n")
    started = time.monotonic()
    output_path = out / ".build-output"
    with output_path.open("w") as output:
        # A session of its own, so that a build past its limit is stopped whole (make, nvcc and all).
        proc = subprocess.Popen(["bash", str(out / "build.sh")], stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            ok = proc.wait(timeout=max(limit, 1)) == 0
            tail = output_path.read_text(errors="replace")[-3000:]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            ok, tail = False, f"build stopped after {limit:.0f} s (the lease's limit)"
    output_path.unlink()
    seconds = time.monotonic() - started
    for log in (
        Path(made["binary"]).parent.parent / "build.log",
        Path(f"/opt/lemfleet/build/{made['build_id']}/build.log"),
    ):
        if log.is_file():
            shutil.copy(log, out / "build.log")
    return ok, seconds, tail


def server_argv(made: dict[str, Any], model: Path, binary: str) -> tuple[list[str], dict[str, str]]:
    """The ExecStart command line of the unit the server step renders, with its environment file's values."""
    from lemfleet.roles.server import render_env, render_unit

    plan = made["plan"]
    unit = render_unit(plan, unit_name="lemfleet-llama", user="lemfleet-llama", binary=binary, api_key_file=None)
    env_text = render_env(plan, unit_name="lemfleet-llama", model_path=str(model), extra_args=[])
    env: dict[str, str] = {}
    for line in env_text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = shlex.split(line)[0].partition("=")
            env[key] = value
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit.replace("\\\n", " "), re.MULTILINE)
    assert exec_start, unit
    argv: list[str] = []
    for word in shlex.split(exec_start.group(1)):
        whole = re.fullmatch(r"\$\{(\w+)\}", word)
        split = re.fullmatch(r"\$(\w+)", word)
        if whole:  # systemd: ${VAR} is one argument
            argv.append(env.get(whole.group(1), ""))
        elif split:  # $VAR is split at whitespace
            argv += env.get(split.group(1), "").split()
        else:
            argv.append(word)
    return argv, env


def serve_and_smoke(
    target: dict[str, Any], argv: list[str], env: dict[str, str], out: Path, tokens: int, runs: int
) -> dict[str, Any]:
    """Start the server as the unit would, run lemfleet's smoke client on it, then the gate's offload check."""
    from lemfleet.smoke import smoke_check

    say("server: " + " ".join(shlex.quote(a) for a in argv))
    log = (out / "server.log").open("w")
    started = time.monotonic()
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
    extra: dict[str, Any] = {}
    try:
        result = smoke_check(f"http://{target['listen_host']}:{target['port']}", model_alias=target["alias"],
                             backend=target["backend"], max_tokens=tokens, health_timeout=180, host="h200")  # fmt: skip
        if result.ok and runs:
            extra = decode_runs(f"http://{target['listen_host']}:{target['port']}", runs)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    (out / "smoke.json").write_text(json.dumps(result.to_json(), indent=2))
    found = {
        "smoke_ok": result.ok,
        "steps": [(s.name, s.status, s.message) for s in result.steps],
        "decode_tokens_per_s": result.decode_tokens_per_s,
        "time_to_first_token_s": result.time_to_first_token_s,
        "completion_tokens": result.completion_tokens,
        "server_seconds": round(time.monotonic() - started, 1),
        **extra,
    }
    try:
        found.update(offload((out / "server.log").read_text(errors="replace"), target))
    except ImportError as err:  # the carried packages failed: bench/device_h200.sh checks server.log afterwards
        found["offload_check"] = f"not run here: {err}"
    return found


def decode_runs(base: str, runs: int = 3, tokens: int = 512) -> dict[str, Any]:
    """Decode speed past the smoke test: llama-server's own timings of 512 tokens (EOS ignored), and GPU memory."""
    import httpx

    found: dict[str, Any] = {"gpu_while_serving": shell("nvidia-smi --query-gpu=memory.used,utilization.gpu "
                                                        "--format=csv,noheader 2>&1")[1].strip()}  # fmt: skip
    timings = []
    for _ in range(runs):
        try:
            ask = {"prompt": "Once upon a time", "n_predict": tokens, "ignore_eos": True, "cache_prompt": False}
            reply = httpx.post(f"{base}/completion", timeout=30, json=ask)
            t = reply.json().get("timings", {})
            timings.append([t.get("predicted_n"), t.get("predicted_per_second"), t.get("prompt_per_second")])
        except (httpx.HTTPError, ValueError) as err:
            timings.append([None, None, str(err)])
    found["decode_runs"] = timings  # [tokens, decode tokens/s, prompt tokens/s] per run
    return found


def offload(log: str, target: dict[str, Any]) -> dict[str, Any]:
    """The gate's offload check on the server's log, filtered as the gate filters the journal."""
    from lemfleet.roles.smoke import LOAD_LINES, MODEL_BUFFER, OFFLOADED, offload_problem

    lines = "\n".join(line for line in log.splitlines() if re.search(LOAD_LINES, line))
    evidence = bool(OFFLOADED.search(lines) or MODEL_BUFFER.search(lines))
    problem = offload_problem(lines, target["backend"], target["n_gpu_layers"])
    return {
        "offload_evidence": evidence,
        "offload_problem": problem,
        "offload_check": "passed" if evidence and problem is None else "failed" if problem else "no evidence",
        "load_lines": lines.splitlines(),
    }


def target_of(made: dict[str, Any]) -> dict[str, Any]:
    plan = made["plan"]
    keys = ("backend", "n_gpu_layers", "listen_host", "port", "alias")
    return {key: getattr(plan, key) for key in keys}


def emit_bundle(made: dict[str, Any], model: Path, path: Path) -> None:
    """What the build and the server need, made here, for a machine whose Python cannot import lemfleet."""
    argv, env = server_argv(made, model, made["binary"])
    bundle = {key: made[key] for key in ("build_id", "src", "binary", "script")}
    bundle.update(plan=made["plan"].to_json(), target=target_of(made), argv=argv, env=env, probes=probe_commands(None))
    path.write_text(json.dumps(bundle, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="tarball of the pinned llama.cpp tree")
    parser.add_argument("--source-id", required=True, help="the pinned sdist's source id (roles/llama_sources.py)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--binary", help="a built llama-server: skip the build (a dry run)")
    parser.add_argument("--gpu-probe", type=Path, help="plan from this recorded GPU probe output; no build")
    parser.add_argument("--emit-bundle", type=Path, help="with --gpu-probe: write the plan's build and server here")
    parser.add_argument("--bundle", type=Path, help="use this bundle where lemfleet cannot be imported")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--deadline", type=float, default=0, help="seconds the whole run may take (0: none)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--embd", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=256, help="tokens the smoke test decodes")
    parser.add_argument("--decode-runs", type=int, default=3, help="512-token decode runs after the smoke test")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lemfleet-device"))
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"source_id": args.source_id}

    def save() -> None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    src = args.workdir / "src"
    if not (src / "CMakeLists.txt").is_file():
        src.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xzf", str(args.source), "-C", str(src)], check=True)
    # The model is written in the background while the probes run: the plan needs its size.
    model = args.workdir / f"bench-gemma3-{args.layers}x{args.embd}.gguf"
    maker = subprocess.Popen([sys.executable, __file__, "--make-model", str(src), str(model), str(args.layers),
                              str(args.embd)])  # fmt: skip
    say("probe")
    made: dict[str, Any]
    host_lines, gpu_lines = probe(out, probe_commands(args.bundle))
    try:
        if args.gpu_probe:
            gpu_lines = args.gpu_probe.read_text().splitlines()
        maker.wait()
        say(f"model {model.stat().st_size / 1e6:.0f} MB; plan")
        made = make_plan(host_lines, gpu_lines, model, args.source_id, args.jobs)
        target = target_of(made)
        plan_json = made["plan"].to_json()
        facts = made["facts"]
        summary.update(
            gpus=[(g.name, g.compute_capability, g.vram_bytes, g.pci_slot) for g in facts.gpus],
            gpu_runtime=repr(facts.gpu_runtime),
            host={"os": f"{facts.os_id} {facts.os_version}", "arch": facts.arch, "cpu": facts.cpu_model,
                  "cores": (facts.cpu_physical_cores, facts.cpu_logical_cores), "systemd": facts.systemd_running},
        )  # fmt: skip
    except ImportError as err:
        if not args.bundle:
            raise
        say(f"lemfleet cannot be imported here ({err}); the plan, build and server come from {args.bundle}")
        maker.wait()
        made = json.loads(args.bundle.read_text())
        target, plan_json = made["target"], made["plan"]
        summary["bundle"] = str(args.bundle)
    summary.update(model={"path": str(model), "bytes": model.stat().st_size}, build_id=made["build_id"], plan=plan_json)
    (out / "plan.json").write_text(json.dumps(plan_json, indent=2))
    save()
    say(f"plan: {plan_json['backend']} {' '.join(plan_json['cmake_flags'])}; build {made['build_id']}")
    if args.gpu_probe:
        if args.emit_bundle:
            emit_bundle(made, model, args.emit_bundle)
        return 0
    binary = args.binary
    if binary is None:
        limit = args.deadline - (time.monotonic() - STARTED) - 75 if args.deadline else 3600.0
        say(f"build -j{args.jobs} (limit {limit:.0f} s)")
        ok, seconds, tail = build(made, args.source, out, limit)
        summary["build"] = {"ok": ok, "seconds": round(seconds, 1), "tail": tail}
        save()
        say(f"build {'ok' if ok else 'FAILED'} in {seconds:.0f} s")
        binary = made["binary"]
        compiled = f"/opt/lemfleet/build/{made['build_id']}/bin/llama-server"
        if not ok:
            print(tail)
            if not Path(compiled).is_file():
                return 1
            say(f"the build step failed after the compile; serving {compiled} to go on")
            binary = compiled
        _, linked = shell(f"ldd {binary} | grep -E 'cuda|cublas'")
        summary["build"]["links"] = linked.splitlines()
    say("serve and smoke")
    if "argv" in made:
        argv, env = [binary if a == made["binary"] else a for a in made["argv"]], made["env"]
    else:
        argv, env = server_argv(made, model, binary)
    summary["smoke"] = smoke = serve_and_smoke(target, argv, env, out, args.tokens, args.decode_runs)
    save()
    say(f"smoke ok={smoke['smoke_ok']} decode {smoke['decode_tokens_per_s']} tokens/s; offload {smoke['offload_check']}"
        f" {smoke.get('offload_problem') or ''}")  # fmt: skip
    return 0 if smoke["smoke_ok"] and smoke["offload_check"] != "failed" else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-model"]:  # main's background job: src, path, layers, embd
        make_model(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        raise SystemExit(0)
    raise SystemExit(main())
