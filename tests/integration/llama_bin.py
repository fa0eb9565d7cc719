"""Where the unit tests find a real ``llama-server`` and llama.cpp's test vocab on this machine.

In order: ``LEMFLEET_LLAMA_SERVER``; a llama.cpp tree built by hand
(``LEMFLEET_LLAMA_CPP_SRC``, default the dev machines' extracted sdist); the
newest build in the controller's build cache (``llama_cpp_build_cache``),
which the test-bed deploys fill and which runs here when this machine has the
same OS and CPU as the test-bed hosts (``testpaths`` runs the test-bed tests
first, so a fresh machine's first deploy fills that cache). Tests that need the
binary fail, saying so, when none of these exists: a live test that quietly did
not run proves nothing.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

from lemfleet.roles.llama_sources import CACHE

SRC = Path(os.environ.get("LEMFLEET_LLAMA_CPP_SRC", "/var/cache/lemfleet-dev/llama_cpp_python-0.3.36/vendor/llama.cpp"))


def _runs(binary: Path) -> bool:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, timeout=30, check=False).returncode == 0
    except OSError:
        return False


def _from_build_cache() -> Path | None:
    bundles = sorted((CACHE / "builds").glob("*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for bundle in bundles:
        bid = bundle.name.removesuffix(".tar.gz")
        binary = CACHE / "unit-tests" / bid / "bin" / "llama-server"
        if not binary.exists():
            with tarfile.open(bundle) as tar:
                member = tar.getmember(f"{bid}/bin/llama-server")
                member.name = "bin/llama-server"
                tar.extract(member, CACHE / "unit-tests" / bid, filter="data")
        if _runs(binary):
            return binary
    return None


def llama_server() -> Path | None:
    if os.environ.get("LEMFLEET_LLAMA_SERVER"):
        return Path(os.environ["LEMFLEET_LLAMA_SERVER"])
    built = SRC / "build" / "bin" / "llama-server"
    if built.exists():
        return built
    return _from_build_cache()


def vocab() -> Path:
    tree = SRC / "models" / "ggml-vocab-llama-spm.gguf"
    if tree.exists():
        return tree
    from lemfleet.demo import vocab_path

    return vocab_path()


MISSING_SERVER = "no llama-server: set LEMFLEET_LLAMA_SERVER, or run the test-bed tests once to fill the build cache"
