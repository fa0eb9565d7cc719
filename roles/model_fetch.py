"""Host-side model download (``model_delivery=host``): the exact URL and sha256 the controller resolved.

The host fetches with curl into ``<dest>.partial`` (resuming a partial file
left by an earlier attempt), checks the sha256, and renames into place only
on a match.

The Hugging Face token stays on the controller whenever the hub allows it:
the controller asks the hub (with the token) where the file is, and when the
hub answers with a signed link on another host (its CDN, as it does for
LFS files), the host downloads that link with no token at all; the link is
kept out of messages. Only when the hub serves the file itself does the token
travel, as a header file in a root-only directory that is removed as soon as
curl exits, success or not, uploaded through the same private staging as the
API key under sudo (never the world-readable ``/tmp/pyinfra-*`` file); it
never appears on a command line, in pyinfra's output or in a file that
outlives the command.
"""

from __future__ import annotations

from io import StringIO
from shlex import quote
from typing import Protocol
from urllib.parse import urlsplit

from huggingface_hub import constants, get_hf_file_metadata, get_token
from pyinfra import host
from pyinfra.api import FileUploadCommand, operation

from lemfleet.roles.hoststate import path_state
from lemfleet.roles.ops import _private_staging as private_staging
from lemfleet.roles.ops import place_verified

SECRET_DIR = "/run/lemfleet-secret"


class HostDownload(Protocol):
    """What a host download needs of the model step's ``ModelArtifact`` (the model step imports this module)."""

    @property
    def url(self) -> str | None: ...

    @property
    def sha256(self) -> str: ...


def controller_token(url: str) -> str | None:
    """The controller's Hugging Face token, only for URLs on the hub endpoint in use."""
    if not url.startswith(constants.ENDPOINT.rstrip("/") + "/"):
        return None
    return get_token()


def token_free_url(url: str, token: str) -> str | None:
    """The signed link the hub redirects ``url`` to when it is on another host (a CDN): no token needed there."""
    location = get_hf_file_metadata(url, token=token).location
    if location.startswith(("http://", "https://")) and urlsplit(location).netloc != urlsplit(url).netloc:
        return location
    return None


def download_script(url: str, dest: str, sha256: str, header_file: str | None, *, shown: str | None = None) -> str:
    """The shell that fetches, verifies and places the model (pure, unit-tested).

    Every value is quoted (the URL once appeared raw inside an ``echo``, where ``$(...)`` ran); curl
    takes the URL as the value of ``--url`` and follows redirects to http(s) only. ``shown`` names the
    file in messages instead of ``url`` (a signed link is not printed).
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"model download URL {url!r} is not http(s)")
    shown = shown or url
    partial = f"{dest}.partial"
    auth = f"-H {quote('@' + header_file)} " if header_file else ""
    cleanup = f"rm -rf {quote(SECRET_DIR)}; " if header_file else ""
    return (
        f"curl -fsSL --proto =http,https --proto-redir =http,https --retry 5 --retry-delay 2 -C - {auth}"
        f"-o {quote(partial)} --url {quote(url)}; rc=$?; {cleanup}"
        f'[ "$rc" = 0 ] || {{ echo {quote(f"download of {shown} failed")}" (curl exit $rc)" >&2; exit 1; }}; '
        f"chmod 644 {quote(partial)} && " + place_verified(partial, dest, sha256, shown)
    )


@operation()
def host_download(model: HostDownload, dest: str):
    """Have the host download ``model.url`` to ``dest`` unless it already has the right file."""
    if path_state(dest).verified_sha256() == model.sha256:
        host.noop(f"{dest} already has sha256 {model.sha256[:12]}")
        return
    assert model.url
    token = controller_token(model.url)
    url, header_file = model.url, None
    if token:
        signed = token_free_url(model.url, token)
        if signed:  # the token stays on the controller
            url = signed
        else:
            header_file = f"{SECRET_DIR}/auth-header"
            yield (
                f"rm -rf {quote(SECRET_DIR)} && mkdir -m 700 {quote(SECRET_DIR)} && "
                f"install -m 600 /dev/null {quote(header_file)}"
            )
            make_staging, staging = private_staging(header_file)
            yield from make_staging
            yield FileUploadCommand(
                StringIO(f"Authorization: Bearer {token}\n"),
                header_file,
                remote_temp_filename=staging or host.get_temp_filename(header_file),
            )
    yield download_script(url, dest, model.sha256, header_file, shown=model.url)
