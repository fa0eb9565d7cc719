"""Point apt on each host at an HTTP proxy, for fleets that reach the archive only through one.

With ``apt_proxy`` unset, nothing is written and a file that lemfleet wrote
before is removed, so turning the setting off is also declared state.

A proxy URL may carry credentials (``http://user:password@proxy:3142``), so
the setting is secret: error messages never show it, operation names show it
with the credentials replaced by ``***`` (:func:`redact_url`), and it may come
from Ansible Vault (a :class:`lemfleet.secret.Secret`). A file holding
credentials is written 0640 root:root through the private staging the API key
uses (no diff, no world-readable temporary file). Without credentials the file
stays 0644: apt tools run by other users then read it without the warning apt
2.6 prints for an unreadable part ("W: Unable to read ... Permission denied").
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import deploy

from lemfleet.roles.ops import absent, put_text
from lemfleet.roles.settings import Setting, defaults
from lemfleet.secret import reveal

PROXY_FILE = "/etc/apt/apt.conf.d/80lemfleet-proxy"
PATHS = (PROXY_FILE,)
ACCEPTED = "an http:// or https:// URL without spaces, quotes, ';' or control characters"


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: safe for names, logs and messages."""
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    authority, sep, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return (f"{scheme}://" if scheme else "") + authority + sep + path


def has_credentials(url: str) -> bool:
    return "@" in urlsplit(url).netloc


def check_proxy(name: str, value: Any) -> str | None:
    """An http(s) proxy URL that apt.conf's quoting keeps intact; messages show it redacted."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is not valid (of type {type(value).__name__}, value hidden); accepted: {ACCEPTED}")
    parts = urlsplit(value) if value.isprintable() else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"[\s\"';\\]", value):
        shown = redact_url(value) if value.isprintable() else "(value with control characters, not shown)"
        raise ValueError(f"{name}={shown!r} is not valid; accepted: {ACCEPTED}")
    return value


SETTINGS = (
    Setting(
        "apt_proxy",
        None,
        "HTTP proxy URL for apt on every host (e.g. an apt-cacher-ng), or None for a direct connection; "
        "credentials in it are shown as *** and written to a 0640 file.",
        check_proxy,
        secret=True,
    ),
)
DEFAULTS = defaults(SETTINGS)


def render(proxy: str) -> str:
    return f'// Managed by lemfleet (setting apt_proxy).\nAcquire::http::Proxy "{proxy}";\n'


@deploy("Configure the apt proxy", data_defaults=DEFAULTS)
def configure_apt_proxy() -> None:
    proxy = reveal(host.data.get("apt_proxy"))
    if proxy:
        private = has_credentials(proxy)
        put_text(
            name=f"Use the apt proxy {redact_url(proxy)}",
            dest=PROXY_FILE,
            content=render(proxy),
            mode="640" if private else "644",
            secret=private,
        )
    else:
        absent(name="No apt proxy", path=PROXY_FILE)
