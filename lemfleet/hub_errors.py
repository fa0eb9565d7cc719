"""Errors of the model download, worded for the people who must act on them.

``huggingface_hub`` raises its own classes (``GatedRepoError``,
``RepositoryNotFoundError``, ...) from the hub's status and ``X-Error-Code``
headers. :func:`explain` turns each into a :class:`HubError` that says what to
do, or a :class:`lemfleet.roles.settings.SettingsError` when a setting names something
the repo lacks. No message ever contains the token, only whether one was sent.
"""

from __future__ import annotations

import httpx2
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import get_token

from lemfleet.errors import SettingsError

# What an unreachable hub looks like to the client: no connection, a timeout, or offline mode.
OFFLINE_ERRORS = (httpx2.ConnectError, httpx2.TimeoutException, hf_errors.OfflineModeIsEnabled)


class HubError(RuntimeError):
    """The hub or the cache cannot provide the model; the message says what to do."""


class IntegrityError(HubError):
    """A file's sha256 or size is not the one the hub (or a pin) promised."""


def explain(
    err: Exception, repo: str, filename: str | None, revision: str, endpoint: str, token: str | None
) -> Exception:
    """Turn a ``huggingface_hub`` error into one that tells people what to do."""
    has_token = bool(token or get_token())
    page = f"{endpoint}/{repo}"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, hf_errors.GatedRepoError):
        if status == 401 or not has_token:
            return HubError(
                f"{repo} is a gated repo and no token was sent (401): create a read token at "
                f"{endpoint}/settings/tokens, set HF_TOKEN on the controller, "
                f"and accept the terms at {page}"
            )
        return HubError(
            f"{repo} is a gated repo and the token's account has not been granted access (403): "
            f"accept the terms at {page} with that account, or use a token of an account that has"
        )
    if isinstance(err, hf_errors.RevisionNotFoundError):
        return SettingsError(
            [f"model_revision={revision!r} does not exist in {repo}; accepted: a branch, tag or commit of the repo"]
        )
    if isinstance(err, hf_errors.RemoteEntryNotFoundError):
        return SettingsError([f"model_file={filename!r} is not in {repo} at {revision}; check the file name"])
    if isinstance(err, hf_errors.RepositoryNotFoundError):
        hint = "check the token's permissions" if has_token else "set HF_TOKEN on the controller"
        return HubError(
            f"model_repo={repo!r} was not found at {endpoint} ({status}): check the name; "
            f"if it is private, {hint} (a token of an account that can read it)"
        )
    if status == 401:
        return HubError(
            f"the hub rejected the token (401): HF_TOKEN is wrong, expired or revoked; "
            f"create a new read token at {endpoint}/settings/tokens"
        )
    if status == 403:
        return HubError(
            f"the token may not read {repo} (403): give the token read access to this repo "
            "(fine-grained tokens list their repos), or use another token"
        )
    return HubError(f"the hub at {endpoint} answered {status} for {repo}: retry later, or set HF_ENDPOINT to a mirror")
