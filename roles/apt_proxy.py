"""Point apt on each host at an HTTP proxy, for fleets that reach the archive only through one.

With ``apt_proxy`` unset, nothing is written and a file that lemfleet wrote
before is removed, so turning the setting off is also declared state.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from lemfleet.roles.ops import absent, put_text
from lemfleet.roles.settings import Setting, defaults, text

PROXY_FILE = "/etc/apt/apt.conf.d/80lemfleet-proxy"
PATHS = (PROXY_FILE,)

SETTINGS = (
    Setting(
        "apt_proxy",
        None,
        "HTTP proxy URL for apt on every host (e.g. an apt-cacher-ng), or None for a direct connection.",
        text(r"https?://[^\s\"';]+", "an http:// or https:// URL", none_ok=True),
    ),
)
DEFAULTS = defaults(SETTINGS)


def render(proxy: str) -> str:
    return f'// Managed by lemfleet (setting apt_proxy).\nAcquire::http::Proxy "{proxy}";\n'


@deploy("Configure the apt proxy", data_defaults=DEFAULTS)
def configure_apt_proxy() -> None:
    proxy = host.data.get("apt_proxy")
    if proxy:
        put_text(name=f"Use the apt proxy {proxy}", dest=PROXY_FILE, content=render(proxy))
    else:
        absent(name="No apt proxy", path=PROXY_FILE)
