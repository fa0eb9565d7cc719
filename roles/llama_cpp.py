"""llama_cpp: build ``llama-server`` for the planned backend, once per build id, and switch to it.

Layout on the host::

    /opt/lemfleet/src/<source-id>/          the llama.cpp tree
    /opt/lemfleet/build/<build-id>/         cmake's build tree and build.log
    /opt/lemfleet/llama.cpp/<build-id>/     bin/llama-server, build.json
    /opt/lemfleet/llama.cpp/current         -> the build the service runs
    /opt/lemfleet/llama.cpp/previous        -> the one before, for rollback

The build id hashes the source identity, backend, targets, cmake flags and
the host's OS and CPU features, so an unchanged id means nothing to build
and nothing to restart. A build is installed under a temporary name and
renamed when complete; a failed build changes no link, so the old build
keeps serving and the host fails with the tail of the build log. Old builds
are pruned only after the new state passed the health gate
(roles/transaction.py), and never one that ``current``, ``previous`` or the
last good state uses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from shlex import quote

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, git, server

from lemfleet.paths import LAST_GOOD_DIR, PREVIOUS_DIR
from lemfleet.roles import build_cache, server_tls
from lemfleet.roles.build_ops import BUILD_USER, BuildRole, build_role, bundle_path, publish_build, receive_build
from lemfleet.roles.distro_builds import versions_setting
from lemfleet.roles.git_pin import commit_setting, pinned_checkout
from lemfleet.roles.hoststate import path_state
from lemfleet.roles.llama_sources import Source
from lemfleet.roles.ops import atomic_link, directory, script_unless_exists, system_user, verified_upload
from lemfleet.roles.plan import HostPlan
from lemfleet.roles.settings import Setting, boolean, defaults, integer, one_of, sha256, string_list, text
from lemfleet.roles.source_plan import SOURCES

ROOT = "/opt/lemfleet"
BUILDS = f"{ROOT}/llama.cpp"
CURRENT = f"{BUILDS}/current"
# The build link of the last state that passed the health gate (roles/transaction.py writes it).
LAST_GOOD_BUILD = f"{LAST_GOOD_DIR}/build"
PREVIOUS_BUILD = f"{PREVIOUS_DIR}/build"  # the state before it, for lemfleet rollback
BINARY = f"{CURRENT}/bin/llama-server"

SETTINGS = (
    # -- source
    Setting(
        "llama_cpp_source",
        "pypi-sdist",
        "Where llama-server comes from. Compiled on the host: 'pypi-sdist' (vendored in a pinned "
        "llama-cpp-python sdist, fetched with pip; works air-gapped), 'git' (hosts clone a pinned tag) or "
        "'tarball'. 'distro': the release's own packages, refused where they cannot serve the plan "
        "(roles/distro_builds.py); 'auto': 'distro' where it serves the plan, else 'pypi-sdist'.",
        one_of(*SOURCES),
    ),
    Setting(
        "llama_cpp_distro_versions",
        {},
        "Package versions for llama_cpp_source='distro' or 'auto' (package -> Debian version) instead of "
        "roles/distro_builds.py's table; the host checks what they cover after installing.",
        versions_setting,
    ),
    # llama-cpp-python 0.3.36 (reviewed 2026-11-29) vendors llama.cpp with ggml 0.25.3.
    Setting(
        "llama_cpp_sdist_version",
        "0.3.36",
        "llama-cpp-python sdist version (pypi-sdist).",
        text(r"\d+\.\d+\.\d+([.-]?\w+)?", "a version such as 0.3.36"),
    ),
    Setting(
        "llama_cpp_sdist_sha256",
        "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
        "sha256 of that sdist; the fetched file must match.",
        sha256,
    ),
    Setting(
        "llama_cpp_pip_index_url",
        None,
        "PyPI index (or mirror) for the sdist; None uses pip's own config.",
        text(r"https?://\S+|file://\S+", "an http(s):// or file:// URL", none_ok=True),
    ),
    Setting("llama_cpp_git_url", "https://github.com/ggml-org/llama.cpp.git", "Repository for the git source.", text()),
    # b10760 is the 2026-09-02 release (reviewed 2026-11-29).
    Setting("llama_cpp_git_ref", "b10760", "Tag the hosts check out (git source).", text(r"[\w./-]+", "a tag")),
    # No default: the commit of b10760 could not be read from a published source when this was written
    # (2026-11-30); git ls-remote prints it, and the git source refuses to run until it is pinned.
    Setting(
        "llama_cpp_git_commit",
        None,
        "Full commit id that llama_cpp_git_ref must be (git source; required): checked against the remote "
        "before any host is touched and in every host's clone before it is built.",
        commit_setting,
    ),
    Setting(
        "llama_cpp_git_check_ref",
        True,
        "Check on the controller, before any host is touched, that the tag exists.",
        boolean,
    ),
    Setting(
        "llama_cpp_tarball",
        None,
        "URL or controller path of a llama.cpp source tarball.",
        text(accepted="a URL or a path", none_ok=True),
    ),
    Setting("llama_cpp_tarball_sha256", None, "sha256 of the tarball; required with llama_cpp_source=tarball.", sha256),
    # -- build
    Setting("llama_cpp_cmake_flags", [], "Extra cmake -D flags, appended to the planned ones.", string_list),
    Setting(
        "llama_cpp_build_jobs",
        None,
        "Parallel compile jobs; None means the host's CPU count.",
        integer(1, 512, none_ok=True),
    ),
    Setting(
        "llama_cpp_build_cache",
        "~/.cache/lemfleet/builds",
        "Controller directory where finished builds are kept by build id and pushed to hosts with "
        "the same id instead of compiling again; None compiles on every host.",
        text(accepted="a path", none_ok=True),
    ),
    Setting("llama_cpp_keep_builds", 2, "Builds kept on the host (current and previous count).", integer(1, 20)),
)
DEFAULTS = defaults(SETTINGS)

BUILD_PACKAGES = ["build-essential", "cmake"]
# The binary is static but for the C and C++ runtimes and OpenMP (ggml's CPU threads).
RUNTIME_PACKAGES = ["libgomp1"]


def build_id(source: Source, plan: HostPlan) -> str:
    identity: dict[str, object] = {
        "source": source.source_id,
        "backend": plan.backend,
        "gpu_targets": list(plan.gpu_targets),
        "cuda_architectures": list(plan.cuda_architectures),
        "cmake_flags": list(plan.cmake_flags),
        # A native build and its static C++ runtime belong to this OS and CPU.
        "os": f"{plan.os_id}-{plan.os_version}-{plan.arch}",
        "cpu_features": list(plan.cpu_features),
    }
    if plan.build_env:  # only when set, so that ids of builds without one stay as they were
        identity["build_env"] = plan.build_env
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


# The library a GPU build must link; without it the binary would silently serve on the CPU.
BACKEND_LIBRARY = {"vulkan": "libvulkan.so", "cuda": "libcudart.so", "hip": "libamdhip64.so"}


# ggml-hip configures with the HIP compiler and ROCm root that hipconfig reports (llama.cpp's build docs, HIP):
# AMD's /opt/rocm/llvm on Ubuntu, Debian's /usr/lib/llvm-N with ROCm in /usr on sid.
HIP_CONFIGURE_ENV = 'HIPCXX="$(hipconfig -l)/clang" HIP_PATH="$(hipconfig -R)"'


def _backend_check(backend: str, binary: str, bid: str, as_user: str) -> list[str]:
    library = BACKEND_LIBRARY.get(backend)
    if library is None:
        return []
    # ldd may run the binary (glibc's ldd loads it with LD_TRACE_LOADED_OBJECTS): never as root.
    return [
        f"{as_user} ldd {binary} | grep -q {library} || {{ echo 'llama-server build {bid} does not link {library}: "
        f"it would serve on the CPU, not {backend}' >&2; exit 1; }}"
    ]


def _tls_check(plan: HostPlan, binary: str, bid: str, as_user: str) -> list[str]:
    """A TLS build must link OpenSSL: cmake only warns when it is missing, and the server would refuse TLS."""
    if server_tls.OPENSSL_ON not in plan.cmake_flags:
        return []
    return [
        f"{as_user} ldd {binary} | grep -q libssl.so || {{ echo 'llama-server build {bid} does not link libssl: "
        "it could not serve server_tls' >&2; exit 1; }"
    ]


def runtime_packages(plan: HostPlan) -> list[str]:
    """The packages a compiled build of this plan needs to run (the GPU runtime comes from roles/drivers)."""
    return _packages(plan, RUNTIME_PACKAGES, server_tls.RUNTIME_PACKAGES)


def _packages(plan: HostPlan, packages: list[str], tls: list[str]) -> list[str]:
    """``packages``, and ``tls`` for a build with OpenSSL (roles/server_tls.py); others stay as they were."""
    return packages + (tls if server_tls.OPENSSL_ON in plan.cmake_flags else [])


def build_script(bid: str, src: str, plan: HostPlan, source: Source, jobs: int) -> str:
    """The shell that configures, builds, checks and installs one build (pure, unit-tested).

    cmake and the build run as ``BUILD_USER``, an unprivileged account that owns only
    this build's tree; the binary's ``--version`` and the backend check run as
    that user too, never as root. Root then installs the binary and records
    the sha256 of every file of the build in ``SHA256SUMS`` beside it: what the
    controller's cache and every host that receives the build check.
    """
    build_dir, dest, log = (
        quote(f"{ROOT}/build/{bid}"),
        quote(f"{BUILDS}/{bid}"),
        quote(f"{ROOT}/build/{bid}/build.log"),
    )
    # git (the git source's build info) refuses a tree owned by another user unless it is named safe.
    env = " ".join(
        [
            f"HOME={build_dir}",
            "GIT_CONFIG_COUNT=1",
            "GIT_CONFIG_KEY_0=safe.directory",
            f"GIT_CONFIG_VALUE_0={quote(src)}",
        ]
        + [f"{quote(k)}={quote(v)}" for k, v in plan.build_env.items()]
        + ([HIP_CONFIGURE_ENV] if plan.backend == "hip" else [])
    )
    user = quote(BUILD_USER)
    as_user = f"runuser -u {user} --"
    record = json.dumps(
        {
            "build_id": bid,
            "backend": plan.backend,
            "source": source.source_id,
            "gpu_targets": list(plan.gpu_targets),
            "cuda_architectures": list(plan.cuda_architectures),
            "cmake_flags": list(plan.cmake_flags),
        },
        sort_keys=True,
    )
    failed = quote(f"llama-server build {bid} failed; last lines of {ROOT}/build/{bid}/build.log:")
    fail = f"{{ echo {failed} >&2; tail -n 40 {log} >&2; exit 1; }}"
    return "\n".join(
        [
            "set -u",
            f"rm -rf {build_dir} {dest}.new && install -d -o {user} -g {user} -m 755 {build_dir} "
            f"&& mkdir -p {dest}.new/bin",
            f"( {as_user} env {env} cmake -S {quote(src)} -B {build_dir} "
            f"{' '.join(quote(f) for f in plan.cmake_flags)} "
            f"&& {as_user} env {env} cmake --build {build_dir} --config Release -t llama-server -j {int(jobs)} ) "
            f"> {log} 2>&1 || {fail}",
            f"install -m 755 {build_dir}/bin/llama-server {dest}.new/bin/llama-server",
            f"{as_user} {dest}.new/bin/llama-server --version >> {log} 2>&1 || {fail}",
            *_backend_check(plan.backend, f"{dest}.new/bin/llama-server", bid, as_user),
            *_tls_check(plan, f"{dest}.new/bin/llama-server", bid, as_user),
            f"echo {quote(record)} > {dest}.new/build.json",
            # The build's record, made when it finishes: what its cache entry and every receiving host check.
            f"( cd {dest}.new && sha256sum bin/llama-server build.json > {quote(build_cache.SUMS)} )",
            f"mv -T {dest}.new {dest}",
            # The tree is large and the log is kept beside the installed build.
            f"cp {log} {dest}/build.log && rm -rf {build_dir}",
        ]
    )


@deploy("Build llama-server", data_defaults=DEFAULTS)
def install_llama_cpp(plan: HostPlan, source: Source) -> OperationMeta:
    """Build (or reuse) llama-server for ``plan`` and point ``current`` at it.

    Returns the link operation, whose ``did_change`` tells the server step
    that the binary changed.
    """
    data = host.data
    bid = build_id(source, plan)
    src = source_dir(source)
    for path in (f"{ROOT}/src", f"{ROOT}/build", BUILDS):
        directory(name=f"Directory {path}", path=path)

    role = host_build_role(plan, source)
    if role.kind == "installed":
        host.noop(f"build {bid} is already installed")
    else:
        compiles = role.compiles
        if role.kind != "receive":
            _compile(bid, src, plan, source, int(data.get("llama_cpp_build_jobs") or plan.cpu_logical_cores), compiles)
        # A host that receives the build needs only what runs it (roles/drivers installs the GPU runtime).
        apt.packages(name="Install runtime dependencies", packages=runtime_packages(plan), update=True, cache_time=3600,
                     no_recommends=True)  # fmt: skip
        if role.kind == "shared":
            publish_build(name=f"Keep build {bid} on the controller, with its sha256", role=role, _if=compiles)
        if role.kind in ("shared", "receive"):
            receive_build(name=f"Receive build {bid} from the controller, sha256 checked", role=role)
    link = atomic_link(
        name=f"Switch to build {bid}", path=CURRENT, target=f"{BUILDS}/{bid}", previous=f"{BUILDS}/previous"
    )
    return link


def prune_builds(keep: int, when: list[Callable[[], bool]]) -> None:
    """Remove old builds once the new state passed the gate (``when``: all must be true at execution)."""
    server.shell(
        name="Prune old builds",
        commands=[_prune_script(keep)],
        _if=when,
    )


def source_dir(source: Source) -> str:
    return f"{ROOT}/src/{source.source_id}"


def installed_binary(bid: str) -> str:
    return f"{BUILDS}/{bid}/bin/llama-server"


def host_build_role(plan: HostPlan, source: Source) -> BuildRole:
    """This host's part for its build id (roles/build_ops.py); the same answer each time it is asked.

    The drivers step asks first, to install the GPU SDK and -dev packages only
    where the build is compiled.
    """
    from lemfleet.roles.controller import once  # controller imports the settings, and so this module

    bid = build_id(source, plan)
    cache = build_cache.cache_dir(host.data.get("llama_cpp_build_cache"))
    exists = cache is not None and once("build-cache", [str(cache), bid], lambda: build_cache.read_entry(cache, bid))
    return build_role(bid, path_state(installed_binary(bid)).exists, cache, bool(exists))


def managed_paths(plan: HostPlan, source: Source) -> list[str]:
    """Every path this step reads or writes, for the one state probe (roles/hoststate.py)."""
    bid = build_id(source, plan)
    paths = [f"{ROOT}/src", f"{ROOT}/build", BUILDS, CURRENT, installed_binary(bid), bundle_path(bid)]
    paths.append(f"{source_dir(source)}/CMakeLists.txt")
    if source.archive is not None:
        paths.append(f"{ROOT}/src/{source.archive.name}")
    return paths


def _compile(bid: str, src: str, plan: HostPlan, source: Source, jobs: int, when: Callable[[], bool]) -> OperationMeta:
    """The compile on the host that builds ``bid``; every operation is skipped where ``when()`` is false."""
    apt.packages(
        name="Install build dependencies",
        packages=_packages(plan, BUILD_PACKAGES + RUNTIME_PACKAGES, server_tls.BUILD_PACKAGES)
        + (["git"] if source.git_url else []),
        update=True,
        cache_time=3600,
        no_recommends=True,
        _if=when,
    )
    system_user(name=f"Build user {BUILD_USER}", user=BUILD_USER, home=f"{ROOT}/build", _if=when)
    if source.git_url:
        git.repo(
            name=f"Clone llama.cpp {source.git_ref}", src=source.git_url, dest=src, branch=source.git_ref,
            pull=False, depth=1, _if=when,
        )  # fmt: skip
        assert source.git_ref and source.git_commit
        pinned_checkout(name=f"Check the clone is commit {source.git_commit[:12]}", path=src,
                        commit=source.git_commit, ref=source.git_ref, _if=when)  # fmt: skip
    elif not path_state(f"{src}/CMakeLists.txt").exists:
        assert source.archive and source.sha256
        archive = f"{ROOT}/src/{source.archive.name}"
        verified_upload(
            name=f"Push source {source.archive.name}",
            src=str(source.archive),
            dest=archive,
            sha256=source.sha256,
            _if=when,
        )
        depth = len([p for p in source.strip_prefix.split("/") if p])
        script_unless_exists(
            name=f"Unpack {source.source_id}",
            path=f"{src}/CMakeLists.txt",
            why=f"source {source.source_id} already unpacked",
            script=(
                f"rm -rf {src}.new && mkdir -p {src}.new && "
                f"tar -xzf {archive} --no-same-owner -C {src}.new --strip-components={depth} "
                f"{quote(source.strip_prefix)} && mv -T {src}.new {src}"
            ),
            _if=when,
        )
    return script_unless_exists(
        name=f"Compile llama-server {bid} ({plan.backend})",
        path=installed_binary(bid),
        why=f"build {bid} is already installed",
        script=build_script(bid, src, plan, source, jobs),
        _if=when,
    )


def _prune_script(
    keep: int, builds: str = BUILDS, last_good_build: str = LAST_GOOD_BUILD, previous_build: str = PREVIOUS_BUILD
) -> str:
    """Shell that removes installed builds beyond ``keep``, never one that serves or may serve again.

    The builds are the real directories under ``builds`` (``find -type d``
    does not follow links, so ``current`` and ``previous`` are never listed as
    builds themselves, and ``<id>.new`` is a build being installed). Protected
    are the targets of ``current``, ``previous`` and the build links of the
    last good and the previous state (roles/transaction.py), compared as
    resolved paths on both sides; they count towards ``keep``, and the newest
    others fill what is left of it.
    """
    links = " ".join(
        quote(link) for link in (f"{builds}/current", f"{builds}/previous", last_good_build, previous_build)
    )
    return (
        f"cd {quote(builds)} 2>/dev/null || exit 0; "
        f'protected=$(for l in {links}; do [ -L "$l" ] && readlink -f "$l"; done); '
        'n=$(printf "%s\\n" "$protected" | sort -u | grep -c .); '
        f"room=$(({int(keep)} - n)); "
        "find . -mindepth 1 -maxdepth 1 -type d ! -name '*.new' -printf '%T@ %f\\n' | sort -rn | cut -d' ' -f2- | "
        'while read -r d; do p=$(readlink -f "$d"); '
        'if printf "%s\\n" "$protected" | grep -qxF "$p"; then continue; fi; '
        'if [ "$room" -gt 0 ]; then room=$((room - 1)); else rm -rf -- "$p"; fi; done'
    )
