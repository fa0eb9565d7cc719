"""Resolve a host's model settings to one exact, verified file, on the controller.

This runs before any host is touched (see ``roles/controller.py``): a wrong
path, URL, sha256, repo, file or quant stops the deploy with a message that
says what to do. Each distinct model is fetched and hashed once per run.
The Hugging Face token is read from ``HF_TOKEN`` by huggingface_hub on the
controller and is never part of host data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from lemfleet import hub
from lemfleet.roles import gguf_header
from lemfleet.roles.gpu_plan import choose_gpu
from lemfleet.roles.llama_sources import CACHE, file_sha256
from lemfleet.roles.model_delivery import ModelArtifact, default_alias
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.value_rules import model_file_name, raise_derived

if TYPE_CHECKING:
    from lemfleet.hub import ResolvedModel


def _alias(settings: Mapping[str, Any], filename: str, setting: str) -> str:
    """The alias, after checking the file name and the alias made from it (both reach the host's files)."""
    raise_derived(setting, filename, settings["model_alias"])
    return settings["model_alias"] or default_alias(filename)


def _local(settings: Mapping[str, Any]) -> ModelArtifact:
    if not settings["model_path"]:
        raise SettingsError(["model_source='local' needs model_path, a GGUF on the controller"])
    path = Path(settings["model_path"]).expanduser().resolve()
    if not path.is_file():
        raise SettingsError([f"model_path={settings['model_path']!r} is not a file on the controller"])
    alias = _alias(settings, path.name, "model_path")
    gguf_header.check_file(path, "model_path")
    actual = file_sha256(path)
    if settings["model_sha256"] and settings["model_sha256"] != actual:
        raise SettingsError(
            [f"model_sha256={settings['model_sha256']!r} does not match {path} (its sha256 is {actual})"]
        )
    return ModelArtifact(alias, path.name, actual, path.stat().st_size, local_path=path)


def _url(settings: Mapping[str, Any]) -> ModelArtifact:
    url, expected = settings["model_url"], settings["model_sha256"]
    if not url or not expected:
        raise SettingsError(["model_source='url' needs model_url and model_sha256"])
    named = model_file_name(settings)
    name = named[1] if named else ""
    alias = _alias(settings, name, "model_url")
    dest = CACHE / "models" / expected / name
    if settings["model_delivery"] == "host":
        with httpx.Client(follow_redirects=True, timeout=60) as client:
            size = int(client.head(url).raise_for_status().headers.get("content-length", 0))
            _check_remote_header(client, url)
        return ModelArtifact(alias, name, expected, size, url=url)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=60) as resp:
                resp.raise_for_status()
                with partial.open("wb") as fh:
                    for chunk in resp.iter_bytes(1 << 20):
                        fh.write(chunk)
        except httpx.HTTPError as err:
            raise SettingsError([f"model_url={url!r} could not be fetched: {err}"]) from err
        actual = file_sha256(partial)
        if actual != expected:
            partial.unlink()
            raise SettingsError(
                [f"model_sha256={expected!r} does not match {url} (got {actual}); the file was rejected"]
            )
        partial.rename(dest)
    gguf_header.check_file(dest, "model_url")
    return ModelArtifact(alias, name, expected, dest.stat().st_size, local_path=dest)


def _check_remote_header(client: httpx.Client, url: str) -> None:
    """The first bytes of the model_url the hosts will download, read with a range request and checked here."""
    head = b""
    try:
        with client.stream("GET", url, headers={"Range": f"bytes=0-{len(gguf_header.LFS_POINTER) - 1}"}) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_bytes():
                head += chunk
                if len(head) >= len(gguf_header.LFS_POINTER):
                    break
    except httpx.HTTPError as err:
        raise SettingsError([f"model_url: the start of {url} could not be read to check it is a GGUF: {err}"]) from err
    problem = gguf_header.header_problem(head, f"model_url: {url}")
    if problem:
        raise SettingsError([problem])


def _on_host(settings: Mapping[str, Any]) -> ModelArtifact:
    path, expected = settings["model_path"], settings["model_sha256"]
    if not path or not path.startswith("/") or not expected:
        raise SettingsError(["model_source='host' needs model_path (absolute, on the host) and model_sha256"])
    name = path.rsplit("/", 1)[-1]
    return ModelArtifact(_alias(settings, name, "model_path"), name, expected, 0, host_path=path)


def hub_listing(settings: Mapping[str, Any], memory_budget: int | None = None, context_bytes: int = 0) -> ResolvedModel:
    try:
        return hub.resolve_model(
            settings["model_repo"],
            settings["model_file"],
            None if settings["model_file"] else settings["model_quant"],
            settings["model_revision"],
            sha256=settings["model_sha256"],
            memory_budget_bytes=memory_budget,
            context_bytes_estimate=context_bytes,
        )
    except hub.HubError as err:
        raise SettingsError([str(err)]) from err


def _hub(settings: Mapping[str, Any], resolved: ResolvedModel) -> ModelArtifact:
    setting = "model_file" if settings["model_file"] else f"model_repo (the file {settings['model_quant']} picked)"
    alias = _alias(settings, resolved.filename, setting)
    if settings["model_delivery"] == "host":
        # No body is fetched here (the controller stays off the CDN in this mode): the hub serves an LFS file's
        # own content, never its pointer. A plain git file is taken only with model_sha256 pinned by the user
        # (lemfleet.hub), and is then not checked before the hosts fetch it.
        return ModelArtifact(
            alias,
            resolved.filename,
            resolved.sha256,
            resolved.size,
            url=resolved.url,
            repo=resolved.repo,
            revision=resolved.revision,
            reason=resolved.reason,
        )
    try:
        path = hub.download(resolved)
    except hub.HubError as err:
        raise SettingsError([str(err)]) from err
    gguf_header.check_file(path, setting)
    return ModelArtifact(
        alias,
        resolved.filename,
        resolved.sha256,
        resolved.size,
        local_path=path,
        repo=resolved.repo,
        revision=resolved.revision,
        reason=resolved.reason,
    )


def resolve(settings: Mapping[str, Any], memory_budget: int | None = None, context_bytes: int = 0) -> ModelArtifact:
    """The model for one host's settings. ``memory_budget`` is needed only for ``model_quant=auto``."""
    source = settings["model_source"]
    if source == "local":
        return _local(settings)
    if source == "url":
        return _url(settings)
    if source == "host":
        return _on_host(settings)
    return _hub(settings, hub_listing(settings, memory_budget, context_bytes))


# What quant=auto keeps free beside the weights: the KV cache and compute
# buffers of the planned context, plus (on a CPU plan) room for the OS.
CONTEXT_RESERVE = {"cpu": 1024**3, "gpu": 512 * 1024**2}


def memory_budget(settings: Mapping[str, Any], facts: Any) -> tuple[int, int]:
    """(budget, context reserve) in bytes: VRAM of the chosen GPUs on a GPU plan, RAM on a CPU plan."""
    gpu = choose_gpu(facts, settings)
    if gpu.backend == "cpu":
        budget, reserve = facts.mem_total_bytes, CONTEXT_RESERVE["cpu"]
    else:
        budget, reserve = gpu.vram_budget_bytes, CONTEXT_RESERVE["gpu"]
    cap = settings.get("model_memory_budget")
    return (min(budget, cap) if cap else budget), reserve


def model_key(settings: Mapping[str, Any], facts: Any) -> dict[str, Any]:
    key = {k: v for k, v in settings.items() if k.startswith("model_") and k not in ("model_keep", "model_dir")}
    if settings["model_source"] == "hub" and settings["model_quant"] == "auto" and not settings["model_file"]:
        key["budget"] = memory_budget(settings, facts)
    return key


def resolve_for_host(settings: Mapping[str, Any], facts: Any) -> ModelArtifact:
    if settings["model_source"] == "hub" and settings["model_quant"] == "auto" and not settings["model_file"]:
        budget, reserve = memory_budget(settings, facts)
        return resolve(settings, budget, reserve)
    return resolve(settings)
