"""Rules that involve more than one setting, checked with the rest before any host is touched."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lemfleet.api_keys import ACCEPTED, key_problems
from lemfleet.paths import LOOPBACK
from lemfleet.roles.server_tls import tls_problems
from lemfleet.secret import reveal


def cross_checks(s: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if s["server_host"] not in LOOPBACK and not (s["server_api_key"] or s["server_api_key_file"]):
        problems.append(
            f"server_host={s['server_host']!r} listens beyond loopback, which needs an API key; "
            "accepted: set server_api_key or server_api_key_file, or keep server_host='127.0.0.1'"
        )
    if s["server_metrics_key"] is not None and reveal(s["server_metrics_key"]) == reveal(s["server_api_key"]):
        problems.append("server_metrics_key is the same as server_api_key; accepted: a key of Prometheus's own")
    if s["server_api_key"] and s["server_api_key_file"]:
        problems.append("server_api_key and server_api_key_file are both set; accepted: one of them")
    elif s["server_api_key_file"]:
        problems += key_file_problems(s["server_api_key_file"])
    problems += tls_problems(s)
    if s["llama_cpp_source"] == "tarball" and not (s["llama_cpp_tarball"] and s["llama_cpp_tarball_sha256"]):
        problems.append(
            "llama_cpp_source='tarball' needs llama_cpp_tarball (a URL or path) and llama_cpp_tarball_sha256"
        )
    source = s["model_source"]
    if source == "local" and not s["model_path"]:
        problems.append("model_source='local' needs model_path, a GGUF on the controller")
    if source == "url" and not (s["model_url"] and s["model_sha256"]):
        problems.append("model_source='url' needs model_url and model_sha256")
    if source == "host" and not (s["model_path"] and s["model_sha256"]):
        problems.append("model_source='host' needs model_path (on the host) and model_sha256")
    if source == "host" and s["model_delivery"] == "host":
        problems.append("model_delivery='host' downloads a file; with model_source='host' it is already there")
    return problems


def key_file_problems(path_text: str) -> list[str]:
    """The key file read on the controller as llama-server will read it on the host (lemfleet.api_keys)."""
    source = f"server_api_key_file={path_text!r}"
    try:
        content = Path(path_text).expanduser().read_text(encoding="utf-8")
    except OSError as err:
        return [f"{source} cannot be read ({err.strerror}); accepted: a readable file of API keys, {ACCEPTED}"]
    except RuntimeError as err:  # expanduser of "~name" for a user that does not exist
        return [f"{source} cannot be read ({err}); accepted: a readable file of API keys, {ACCEPTED}"]
    except UnicodeDecodeError:
        return [f"{source} is not UTF-8 text; accepted: {ACCEPTED}"]
    return key_problems(content, source)
