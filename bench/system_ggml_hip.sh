#!/usr/bin/env bash
# HIP on Debian 13 through the distribution's ggml (issue 17, item 3): can lemfleet skip the ggml-hip compile?
#
# In a throwaway Debian 13 (trixie) root, outside the test bed (systemd-nspawn without --boot; no test-bed lock):
#   1. install trixie-backports' libggml-dev and libggml0-backend-hip (timed; apt's download and disk figures);
#   2. read the gfx targets of the installed libggml-hip.so (the offload bundle ids), the HIP runtime it pulled
#      in, and what Debian says of upstream's HIP >= 6.1 floor (the package changelog; the source package's
#      patches when the mirror has the sources: deb.debian.org as seen from here on 2026-11-30 had not);
#   3. load libggml-hip.so with the system ggml's own loader (ggml_backend_load): no GPU here, so 0 devices;
#   4. compile only llama.cpp, the tree vendored in the pinned llama-cpp-python sdist, against the system ggml
#      (LLAMA_USE_SYSTEM_GGML=ON; the vendored ggml's sources and headers moved aside, its cmake/ helpers kept,
#      since llama.cpp's CMakeLists include them), with lemfleet's base flags, target llama-server only (timed);
#   5. what that llama-server links (ldd) and lists (--list-devices), then serve the tiny model on the CPU through
#      the system ggml on loopback: one completion, and the backends ggml loaded (its log).
# Findings: README, "llama.cpp from the distribution" ("HIP on Debian 13 through the distribution's ggml").
#
#   sudo bench/system_ggml_hip.sh            # JOBS=2 by default: the machine's other users share the cores
#   WORK=/var/tmp/x JOBS=1 MIRROR=http://127.0.0.1:3142/deb.debian.org/debian sudo -E bench/system_ggml_hip.sh
#
# BUILD=0 skips the compile (step 4; step 5 then uses a llama-server an earlier KEEP=1 run left in the root).
# MODEL is the GGUF for step 5 (the demo's tiny model by default; skipped when absent). Writes $OUT
# (out/bench/system-ggml-hip/): install.log, configure.log, build.log, server.log, summary.txt. KEEP=1 keeps the
# root for a look inside; otherwise it is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/var/tmp/lemfleet-system-ggml-hip}
JOBS=${JOBS:-2}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SDIST=${SDIST:-$HOME/.cache/lemfleet/sdist/llama_cpp_python-0.3.36.tar.gz}
OUT=${OUT:-$PWD/out/bench/system-ggml-hip}
BUILD=${BUILD:-1}
MODEL=${MODEL:-$HOME/.cache/lemfleet/demo/lemfleet-tiny-gemma3.gguf}
PORT=${PORT:-18765}
ROOT=$WORK/root
BACKENDS=/usr/lib/x86_64-linux-gnu/ggml/backends0
HIP_SO=$BACKENDS/libggml-hip.so
FLAGS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
       -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_USE_SYSTEM_GGML=ON"

[ "$(id -u)" -eq 0 ] || { echo "bench/system_ggml_hip.sh: needs root (systemd-nspawn)" >&2; exit 2; }
[ -f "$SDIST" ] || { echo "bench/system_ggml_hip.sh: no sdist at $SDIST (a deploy or the test bed caches it)" >&2; exit 2; }
mkdir -p "$OUT" "$WORK"
: > "$OUT/summary.txt"
say() { echo "$*" | tee -a "$OUT/summary.txt"; }
# One command in the root: nspawn without --boot, the host's network, no machine registration.
in_root() {
    systemd-nspawn -q --register=no --keep-unit -M lemfleet-sysggml --resolv-conf=off --timezone=off \
        --link-journal=no -D "$ROOT" --pipe sh -c "$1" 2> >(grep -v 'Attempted to remove disk file system' >&2)
}
seconds() { local start=$1; echo $(($(date +%s) - start)); }

# 1. The root: a copy of the test bed's cached trixie root filesystem, else a fresh debootstrap.
if [ ! -d "$ROOT" ]; then
    cached=$(ls -d /var/cache/lemfleet-testbed/rootfs/trixie-* 2>/dev/null | head -1 || true)
    if [ -n "$cached" ]; then cp -a "$cached" "$ROOT"; else debootstrap --variant=minbase trixie "$ROOT" "$MIRROR"; fi
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cat > "$ROOT/etc/apt/sources.list.d/lemfleet-bench.list" <<EOF
deb $MIRROR trixie main
deb $MIRROR trixie-backports main
deb-src $MIRROR trixie-backports main
EOF
rm -f "$ROOT/etc/apt/sources.list"
start=$(date +%s)
in_root "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && \
    apt-get install -y -q --no-install-recommends -t trixie-backports libggml-dev libggml0-backend-hip" \
    > "$OUT/install.log" 2>&1
say "install libggml-dev libggml0-backend-hip (trixie-backports): $(seconds "$start") s, download and unpack"
grep -E '^(Need to get|After this operation)' "$OUT/install.log" | sed 's/^/  apt: /' | tee -a "$OUT/summary.txt" || true
say "packages (version, Installed-Size KiB):"
in_root "dpkg-query -W -f='  \${Package} \${Version} \${Installed-Size}\n' libggml0 libggml-dev libggml0-backend-hip \
    'libamdhip64-*' 'librocblas*' 'libhipblas*' 'librocsolver*' 'libamd-comgr*' 'libllvm*' 2>/dev/null" | awk 'NF == 3' \
    | tee -a "$OUT/summary.txt"
say "libggml-hip.so: $(stat -c %s "$ROOT$HIP_SO") bytes"
say "its gfx targets: $(grep -aoE 'amdgcn-amd-amdhsa--gfx[0-9a-f]+' "$ROOT$HIP_SO" | sed 's/.*--//' | sort -u | tr '\n' ' ')"
in_root "export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q --no-install-recommends \
    cmake g++ make pkg-config dpkg-dev xz-utils curl" >> "$OUT/install.log" 2>&1

# 2. The HIP floor: the changelog names Debian's patch; the patch itself is in the source package.
say "Debian's changelog on ROCm/HIP:"
zgrep -iE 'rocm|hip' "$ROOT/usr/share/doc/libggml0/changelog.Debian.gz" | head -12 | sed 's/^/  /' | tee -a "$OUT/summary.txt"
if in_root "mkdir -p /src/ggml-source && cd /src/ggml-source && apt-get source -q --download-only ggml/trixie-backports \
        && tar -xJf ggml_*.debian.tar.xz && cat debian/patches/series" > "$OUT/patches.txt" 2>&1; then
    say "debian/patches/series: $(tr '\n' ' ' < "$OUT/patches.txt")"
    in_root "cat /src/ggml-source/debian/patches/*ROCm*" > "$OUT/rocm-patch.txt" 2>&1 || true
else
    say "the source package could not be fetched from $MIRROR (see $OUT/patches.txt)"
fi

# 3. The backend loads with the system ggml's own loader.
cat > "$ROOT/src-load_backend.c" <<'EOF'
#include <stdio.h>
#include <ggml-backend.h>
int main(int argc, char **argv) {
    ggml_backend_reg_t reg = ggml_backend_load(argv[1]);
    if (!reg) { printf("ggml_backend_load failed: %s\n", argv[1]); return 1; }
    printf("ggml_backend_load: backend %s, %zu device(s)\n", ggml_backend_reg_name(reg), ggml_backend_reg_dev_count(reg));
    return 0;
}
EOF
say "$(in_root "gcc -o /usr/local/bin/load_backend /src-load_backend.c -lggml -lggml-base && load_backend $HIP_SO" 2>&1 \
    | tail -3)"

# 4. llama.cpp alone against the system ggml.
bin=/src/llama.cpp/build/bin/llama-server
if [ "$BUILD" = 1 ]; then
    in_root "rm -rf /src/llama.cpp /src/ggml.vendored && mkdir -p /src" >/dev/null
    tar -xzf "$SDIST" -C "$ROOT/src" --strip-components=2 "$(basename "$SDIST" .tar.gz)/vendor/llama.cpp"
    mv "$ROOT/src/llama.cpp/ggml" "$ROOT/src/ggml.vendored"
    mkdir -p "$ROOT/src/llama.cpp/ggml" && cp -a "$ROOT/src/ggml.vendored/cmake" "$ROOT/src/llama.cpp/ggml/"
fi
if [ -f "$ROOT/src/ggml.vendored/CMakeLists.txt" ]; then
    say "pinned llama.cpp: $(basename "$SDIST"), its vendored ggml $(grep -oE 'GGML_VERSION_(MAJOR|MINOR|PATCH) [0-9]+' \
        "$ROOT/src/ggml.vendored/CMakeLists.txt" | awk '{print $2}' | paste -sd.); the system ggml: \
$(in_root "dpkg-query -W -f='\${Version}' libggml-dev")"
fi
if [ "$BUILD" = 1 ]; then
    in_root "cd /src/llama.cpp && cmake -S . -B build $(echo $FLAGS)" > "$OUT/configure.log" 2>&1 \
        || { say "configure failed:"; grep -m5 -A3 'CMake Error' "$OUT/configure.log" | tee -a "$OUT/summary.txt"; exit 1; }
    start=$(date +%s)
    if in_root "cd /src/llama.cpp && cmake --build build --config Release -t llama-server -j $JOBS" \
            > "$OUT/build.log" 2>&1; then
        say "llama-server built against the system ggml in $(seconds "$start") s wall (-j $JOBS; load $(cut -d' ' -f1-3 /proc/loadavg))"
    else
        say "llama-server did NOT build against the system ggml ($(seconds "$start") s, -j $JOBS); first errors:"
        grep -m8 -E 'error:|Error [0-9]' "$OUT/build.log" | sed 's/^/  /' | tee -a "$OUT/summary.txt"
    fi
fi

# 5. What it links and loads, and one completion on the CPU through the system ggml.
if [ -f "$ROOT$bin" ]; then
    say "llama-server: $(stat -c %s "$ROOT$bin") bytes; links: $(in_root "ldd $bin" \
        | grep -E 'ggml|hip|llama' | awk '{print $1, $3}' | tr '\n' ' ')"
    say "--list-devices: $(in_root "$bin --list-devices" 2>&1 | tr '\n' ' ')"
    if [ -f "$MODEL" ]; then
        cp "$MODEL" "$ROOT/src/model.gguf"
        in_root "cd /src; $bin -m model.gguf --host 127.0.0.1 --port $PORT -t 1 -c 256 -lv 4 > server.log 2>&1 & p=\$!;
            for i in \$(seq 60); do sleep 1; curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; done;
            curl -sf http://127.0.0.1:$PORT/completion -d '{\"prompt\":\"Hello\",\"n_predict\":8}' > completion.json;
            kill \$p; wait \$p" || true
        cp "$ROOT/src/server.log" "$OUT/server.log" 2>/dev/null || true
        say "serving $(basename "$MODEL") on the CPU: $(grep -o '"tokens_predicted":[0-9]*' "$ROOT/src/completion.json" \
            2>/dev/null || echo 'no completion')"
        grep -E 'load_backend: loaded' "$OUT/server.log" | sed 's/^[^l]*/  /' | tee -a "$OUT/summary.txt" || true
    fi
else
    say "no llama-server in the root (BUILD=0 without an earlier KEEP=1 build): step 5 skipped"
fi
[ "${KEEP:-0}" = 1 ] || rm -rf "$ROOT"
echo "bench/system_ggml_hip.sh: $OUT/summary.txt"
