"""Host-side model download (``model_delivery=host``): the exact URL and sha256 the controller resolved.

The host fetches with curl into ``<dest>.partial`` (resuming a partial file
left by an earlier attempt), checks the sha256, and renames into place only
on a match. When the hub needs a token, it travels as a header file inside a
root-only directory that is removed as soon as curl exits, success or not;
it never appears on a command line, in pyinfra's output or in a file that
outlives the command.
"""

from __future__ import annotations

from io import StringIO
from typing import Protocol

from huggingface_hub import constants, get_token
from pyinfra import host
from pyinfra.api import FileUploadCommand, operation

from lemfleet.roles.hoststate import state
from lemfleet.roles.ops import place_verified, q

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


def download_script(url: str, dest: str, sha256: str, header_file: str | None) -> str:
    """The shell that fetches, verifies and places the model (pure, unit-tested).

    Every value is quoted (the URL once appeared raw inside an ``echo``, where ``$(...)`` ran); curl
    takes the URL as the value of ``--url`` and follows redirects to http(s) only.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"model download URL {url!r} is not http(s)")
    partial = f"{dest}.partial"
    auth = f"-H {q('@' + header_file)} " if header_file else ""
    cleanup = f"rm -rf {q(SECRET_DIR)}; " if header_file else ""
    return (
        f"curl -fsSL --proto =http,https --proto-redir =http,https --retry 5 --retry-delay 2 -C - {auth}"
        f"-o {q(partial)} --url {q(url)}; rc=$?; {cleanup}"
        f'[ "$rc" = 0 ] || {{ echo {q(f"download of {url} failed")}" (curl exit $rc)" >&2; exit 1; }}; '
        f"chmod 644 {q(partial)} && " + place_verified(partial, dest, sha256, url)
    )


@operation()
def host_download(model: HostDownload, dest: str):
    """Have the host download ``model.url`` to ``dest`` unless it already has the right file."""
    if state(dest).verified_sha256() == model.sha256:
        host.noop(f"{dest} already has sha256 {model.sha256[:12]}")
        return
    assert model.url
    token = controller_token(model.url)
    header_file = None
    if token:
        header_file = f"{SECRET_DIR}/auth-header"
        yield f"rm -rf {q(SECRET_DIR)} && mkdir -m 700 {q(SECRET_DIR)}"
        yield FileUploadCommand(StringIO(f"Authorization: Bearer {token}\n"), header_file)
    yield download_script(model.url, dest, model.sha256, header_file)
