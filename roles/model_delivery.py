"""model: put the GGUF on the host, verified, under a name that says which content it is.

Files live at ``/var/lib/lemfleet/models/<sha256[:12]>-<file>``. A new model
goes to a temporary name and is renamed into place once its sha256 matches
on the host, so a bad transfer never replaces the file that is serving; a
host that already has the file receives nothing. Older files beyond
``model_keep`` are pruned once the new state passed the health gate, never
the last good state's.

Where the file comes from is decided on the controller (``roles/model_source.py``)
before any host is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import Sha256File
from pyinfra.operations import server

from lemfleet.paths import LAST_GOOD_DIR, PREVIOUS_DIR
from lemfleet.quants import AUTO, KNOWN_QUANTS, parse_gguf_name
from lemfleet.roles.hoststate import SIDECAR, path_state
from lemfleet.roles.model_fetch import host_download
from lemfleet.roles.ops import directory, fail, verified_upload
from lemfleet.roles.settings import Setting, defaults, integer, one_of, sha256, text


def quant_name(name: str, value: Any) -> str:
    if isinstance(value, str) and (value.lower() == AUTO or value.upper() in KNOWN_QUANTS):
        return value.lower() if value.lower() == AUTO else value.upper()
    raise ValueError(f"{name}={value!r} is not a known quant; accepted: 'auto', {', '.join(KNOWN_QUANTS)}")


SETTINGS = (
    Setting(
        "model_source",
        "hub",
        "Where the GGUF comes from: 'hub' (Hugging Face, or a mirror via HF_ENDPOINT), 'local' "
        "(model_path on the controller), 'url' (model_url, needs model_sha256) or 'host' "
        "(model_path already on the host, needs model_sha256).",
        one_of("hub", "local", "url", "host"),
    ),
    Setting(
        "model_repo",
        "lthn/LEM-Gemma3-1B-GGUF",
        "Hub repository (model_source=hub).",
        text(r"[\w.-]+/[\w.-]+", "owner/name"),
    ),
    Setting(
        "model_file",
        None,
        "File in the repository; None picks it from model_quant.",
        text(r"[^/\s][^\s]*\.gguf", "a .gguf file name", none_ok=True),
    ),
    Setting(
        "model_quant",
        "Q4_K_M",
        "Quant to serve (e.g. Q4_K_M, Q8_0, IQ4_XS), or 'auto' for the largest that fits the host's memory budget.",
        quant_name,
    ),
    Setting("model_revision", "main", "Hub branch, tag or commit.", text()),
    Setting(
        "model_delivery",
        "controller",
        "'controller': download once on the controller and push; 'host': each host downloads "
        "the exact URL and sha256 the controller resolved.",
        one_of("controller", "host"),
    ),
    Setting(
        "model_path",
        None,
        "Controller path (model_source=local) or host path (model_source=host).",
        text(accepted="a path", none_ok=True),
    ),
    Setting(
        "model_url",
        None,
        "HTTP(S) URL of the GGUF (model_source=url).",
        text(r"https?://\S+", "an http(s):// URL", none_ok=True),
    ),
    Setting("model_sha256", None, "Pinned sha256; required for url and host sources, checked for all.", sha256),
    Setting(
        "model_alias",
        None,
        "Model id clients see (--alias); None uses the file name without quant and extension.",
        text(r"[\w.:-]+", "letters, digits, '.', ':', '_' or '-'", none_ok=True),
    ),
    Setting(
        "model_dir", "/var/lib/lemfleet/models", "Where models live on the host.", text(r"/\S+", "an absolute path")
    ),
    Setting(
        "model_memory_budget",
        None,
        "Bytes model_quant=auto may fill with weights plus context; None measures it (VRAM of the chosen "
        "GPUs, or RAM on a CPU plan). A value caps the measured budget.",
        integer(1, 2**62, none_ok=True),
    ),
    Setting("model_keep", 2, "Model files kept on the host, the serving one included.", integer(1, 50)),
)
DEFAULTS = defaults(SETTINGS)

# Room kept free beyond the file itself, for the temporary copy's metadata and logs.
DISK_MARGIN = 64 * 1024**2
# The model link of the last state that passed the health gate (roles/transaction.py writes it).
LAST_GOOD_MODEL = f"{LAST_GOOD_DIR}/model"
# And of the state before it, which lemfleet rollback may put back.
PREVIOUS_MODEL = f"{PREVIOUS_DIR}/model"


@dataclass(frozen=True)
class ModelArtifact:
    """A model resolved on the controller: what it is and where the host gets it from."""

    alias: str
    filename: str
    sha256: str
    size: int
    local_path: Path | None = None  # pushed from the controller
    url: str | None = None  # fetched by the host (model_delivery=host)
    host_path: str | None = None  # already on the host (model_source=host)
    repo: str | None = None
    revision: str | None = None
    reason: str = ""  # why this file, e.g. what model_quant=auto weighed

    def path_on_host(self, model_dir: str) -> str:
        if self.host_path:
            return self.host_path
        return f"{model_dir}/{self.sha256[:12]}-{self.filename}"


@deploy("Install the model", data_defaults=DEFAULTS)
def install_model(model: ModelArtifact, disk_free: dict[str, int]) -> tuple[str, OperationMeta | None]:
    """Place ``model`` on the host; return its path there and the operation that placed it."""
    model_dir = host.data.get("model_dir")
    dest = model.path_on_host(model_dir)
    if model.host_path:
        check_on_host(name=f"Check {dest}", path=dest, sha256=model.sha256)
        return dest, None
    directory(name=f"Directory {model_dir}", path=model_dir)
    if path_state(dest).verified_sha256() == model.sha256:
        host.noop(f"{dest} is in place, sha256 {model.sha256[:12]}")
        return dest, None
    free = disk_free.get(model_dir, disk_free.get("/var/lib/lemfleet"))
    if free is not None and free < model.size + DISK_MARGIN:
        fail(
            name="Check free disk for the model",
            message=f"not enough disk for {model.filename}: {model.size / 1e6:.0f} MB needed plus "
            f"{DISK_MARGIN // 1024**2} MB margin, {free / 1e6:.0f} MB free under {model_dir}",
        )
        return dest, None
    if model.local_path is not None:
        op = verified_upload(name=f"Push {model.filename}", src=str(model.local_path), dest=dest, sha256=model.sha256)
    else:
        op = host_download(name=f"Download {model.filename} on the host", model=model, dest=dest)
    return dest, op


def managed_paths(model: ModelArtifact, model_dir: str) -> list[str]:
    """The paths this step reads or writes, for the one state probe (roles/hoststate.py)."""
    return [model_dir, model.path_on_host(model_dir)]


@operation()
def check_on_host(path: str, sha256: str):
    """Fail the host unless the model the user placed at ``path`` has ``sha256``; never changes it."""
    if host.get_fact(Sha256File, path=path) == sha256:
        host.noop(f"{path} has sha256 {sha256[:12]}")
        return
    yield f"echo {quote(f'lemfleet: {path} is missing or its sha256 is not model_sha256 ({sha256})')} >&2; exit 1"


def prune_models(model_dir: str, serving: str, keep: int, when: list[Callable[[], bool]]) -> None:
    """Keep the serving model, the last good and previous states' and the ``keep - 1`` most recent; remove the rest.

    Runs only once the new state passed the health gate (``when``: all must
    be true at execution). "Most recently served" is the mtime of each file's
    check record, touched whenever the file becomes the serving one (the
    model's own mtime is part of that record, so it is never touched).
    """
    server.shell(name="Prune old models", commands=[prune_script(model_dir, serving, keep)], _if=when)


def prune_script(model_dir: str, serving: str, keep: int, last_good_model: str = LAST_GOOD_MODEL,
                 previous_model: str = PREVIOUS_MODEL) -> str:  # fmt: skip
    """The shell behind :func:`prune_models` (pure, run on a temporary directory by the unit tests).

    The previous state's model (lemfleet rollback) is protected as the last good one's is. The
    ``keep - 1`` most recent are counted before the protected ones are set aside, so a protected
    model that is also among the most recent does not make room for an older one.
    """
    return (
        f"touch -c {quote(serving + SIDECAR)}; good=$(readlink {quote(last_good_model)} 2>/dev/null || true); "
        f"prev=$(readlink {quote(previous_model)} 2>/dev/null || true); "
        f"ls -1t {quote(model_dir)}/*.gguf{SIDECAR} 2>/dev/null | sed 's/{SIDECAR}$//' | grep -vxF {quote(serving)} | "
        f'tail -n +{int(keep)} | grep -vxF "${{good:-/}}" | grep -vxF "${{prev:-/}}" | '
        f'while read -r f; do rm -f -- "$f" "$f{SIDECAR}"; done'
    )


def default_alias(filename: str) -> str:
    """``LEM-Gemma3-1B-Q4_K_M.gguf`` -> ``LEM-Gemma3-1B``."""
    parsed = parse_gguf_name(Path(filename).name)
    return parsed[0] if parsed else Path(filename).name.removesuffix(".gguf")


__all__ = ["ModelArtifact", "install_model", "managed_paths", "prune_models", "prune_script"]
