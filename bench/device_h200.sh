#!/usr/bin/env bash
# lemfleet on one real GPU machine that has no sshd, systemd or internet (this workplace's lent H200):
# the host and GPU probes, the plan, the planned build of the pinned llama.cpp, the server started with
# the unit's command line, lemfleet's smoke client and the gate's offload check (bench/device_h200.py).
#
#   bench/device_h200.sh SRC_TARBALL OUT --source-id ID [bench/device_h200.py options]
#
# SRC_TARBALL: the pinned sdist's vendor/llama.cpp tree, less docs/, benches/, media/ and every models/
# file but ggml-vocab-llama-spm.gguf (the tiny GGUF's vocabulary), so that it travels (11 MB):
#   tar -xzf ~/.cache/lemfleet/sdist/llama_cpp_python-0.3.36.tar.gz llama_cpp_python-0.3.36/vendor/llama.cpp
#   (cd llama_cpp_python-0.3.36/vendor/llama.cpp && rm -rf docs benches media .github .devops &&
#    find models -type f ! -name ggml-vocab-llama-spm.gguf -delete && tar -czf "$OLDPWD/src.tar.gz" .)
# ID: the pinned sdist's source id, llama-cpp-python-0.3.36-<sha256[:12] of the sdist> (what the build id
# hashes; roles/llama_sources.py). WHEELS=DIR installs the wheels in DIR into /tmp/site first: pyinfra and
# what lemfleet imports that the machine's Python 3.12 lacks (made with `pip download --no-deps
# --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 ...`: pyinfra gevent greenlet
# zope.event zope.interface paramiko bcrypt cryptography cffi pycparser pynacl invoke typeguard distro gguf
# huggingface_hub httpx2 httpcore2 truststore, at the versions of .venv).
# --bundle FILE (made here with --gpu-probe recorded.txt --emit-bundle FILE) is the plan, build shell and
# server command line to use should lemfleet not import there.
#
# As run on 2026-11-30, from a `git archive HEAD` copy of the repo carried with the wheels and the tarball:
#   WHEELS=../whl bash bench/device_h200.sh ../llama.cpp-src.tar.gz "$OUT" --deadline 410 --jobs 16 \
#       --source-id llama-cpp-python-0.3.36-832db0699007 --bundle ../bundle.json
# (283 s: plan made there, build b0e17c792b8caadc in 256 s, smoke passed at 1085 tokens/s, offload check
# passed; README "Hardware and what is proven where". A first run without the last four wheels used the
# bundle: 287 s build, 1018 tokens/s.)
# OUT gets run.log, tools.txt (raw probe and tool outputs), plan.json, build.sh, build.log, server.log,
# smoke.json and summary.json. Exit status: 0 when the smoke test and the offload check passed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: bench/device_h200.sh SRC_TARBALL OUT --source-id ID [bench/device_h200.py options]" >&2
    exit 2
fi
src=$(realpath "$1") out=$2
shift 2
mkdir -p "$out"
run() {
    if [ -n "${WHEELS:-}" ]; then
        for wheel in "$WHEELS"/*.whl; do  # one at a time: a wheel this Python refuses leaves the others installed
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
                "$wheel" || echo "bench/device_h200.sh: $wheel did not install"
        done
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
        echo "bench/device_h200.sh: nvcc is not on PATH; adding /usr/local/cuda/bin"
        export PATH="$PATH:/usr/local/cuda/bin"
    fi
    echo "python3: $(command -v python3) $(python3 --version 2>&1); nvcc: $(command -v nvcc); cmake: $(command -v cmake)"
    python3 -c "import lemfleet.roles.llama_cpp, lemfleet.roles.server, lemfleet.roles.facts.gpu" 2>&1 | tail -n 3
    python3 bench/device_h200.py --source "$src" --out "$out" "$@"
}
run "$@" 2>&1 | tee -a "$out/run.log"
