"""Repository keys and keyring packages, installed only when they are the pinned ones.

A repository key decides which packages apt will trust for root, so lemfleet
does not take whatever the URL serves: the key file is fetched into a
temporary directory on the host, its primary-key fingerprints must be exactly
the pinned ones (roles/platform_pins.py, each with its published source), and
only then is it dearmored into the keyring apt reads. A keyring package
(cuda-keyring) runs maintainer scripts as root when dpkg installs it, so it is
placed only when its sha256 is the pinned one. Either check failing leaves the
host as it was and fails the host with the values found.

Both are operations that read the host's current state (a fact) and yield
nothing when the wanted file is already there.
"""

from __future__ import annotations

from shlex import quote

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.facts.files import Sha256File

# curl may only use these protocols, redirects included; tests serve http on loopback.
PROTOCOLS = "https"


def _curl(url: str, dest: str, protocols: str) -> str:
    allowed = quote("=" + protocols)
    return f"curl -fsSL --proto {allowed} --proto-redir {allowed} --retry 3 -o {quote(dest)} --url {quote(url)}"


def _fingerprints_of(path: str) -> str:
    """Shell printing the primary-key fingerprints in ``path`` (armored or not), one per line, sorted."""
    return (
        f"GNUPGHOME={quote(path)}.gnupg gpg --batch --no-autostart --show-keys --with-colons {quote(path)} 2>/dev/null "
        '| awk -F: \'$1 == "pub" {want = 1; next} $1 == "fpr" && want {print $10; want = 0}\' | sort -u'
    )


class KeyFingerprints(FactBase):
    """Primary-key fingerprints of an OpenPGP key file, sorted; empty when there is none.

    Sample output::

        CA8BB4727A47B4D09B4EE8969386B48A1A693C5C
    """

    def command(self, path: str) -> str:
        home = "$(mktemp -d)"
        return (
            f"h={home}; [ -f {quote(path)} ] && GNUPGHOME=$h gpg --batch --no-autostart --show-keys --with-colons "
            f'{quote(path)} 2>/dev/null | awk -F: \'$1 == "pub" {{want = 1; next}} $1 == "fpr" && want '
            '{print $10; want = 0}\' | sort -u; rm -rf "$h"; true'
        )

    def requires_command(self, path: str) -> str:
        return "gpg"

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip().upper() for line in output if line.strip())


def key_script(url: str, dest: str, fingerprints: tuple[str, ...], protocols: str = PROTOCOLS) -> str:
    """Fetch the key at ``url``, check its fingerprints are exactly ``fingerprints``, dearmor it to ``dest``."""
    wanted = " ".join(sorted(f.upper() for f in fingerprints))
    fetched = f"{dest}.lemfleet-fetched"
    return (
        f"rm -rf {quote(fetched)} {quote(fetched)}.gnupg && mkdir -m 700 {quote(fetched)}.gnupg && "
        f"{_curl(url, fetched, protocols)} && "
        f'found=$({_fingerprints_of(fetched)} | tr "\\n" " " | sed "s/ $//"); '
        f'if [ "$found" != {quote(wanted)} ]; then '
        f'echo "the key at "{quote(url)}" has the fingerprints [${{found:-none}}], not the pinned '
        f'"{quote(wanted)} >&2; '
        f"rm -rf {quote(fetched)} {quote(fetched)}.gnupg; exit 1; fi; "
        f"GNUPGHOME={quote(fetched)}.gnupg gpg --batch --no-autostart --yes --dearmor "
        f"-o {quote(dest)}.lemfleet-new {quote(fetched)} && chmod 644 {quote(dest)}.lemfleet-new && "
        f"mv -f {quote(dest)}.lemfleet-new {quote(dest)}; "
        f"rc=$?; rm -rf {quote(fetched)} {quote(fetched)}.gnupg; exit $rc"
    )


def download_script(url: str, dest: str, sha256: str, protocols: str = PROTOCOLS) -> str:
    """Fetch ``url`` beside ``dest`` and rename it into place only when its sha256 is ``sha256``."""
    partial = f"{dest}.lemfleet-new"
    return (
        f"{_curl(url, partial, protocols)} && "
        f"actual=$(sha256sum {quote(partial)} | cut -d' ' -f1) && "
        f'if [ "$actual" != {quote(sha256)} ]; then '
        f'echo {quote(url)}" has sha256 $actual, not the pinned "{quote(sha256)} >&2; '
        f"rm -f {quote(partial)}; exit 1; fi && "
        f"mv -f {quote(partial)} {quote(dest)}"
    )


@operation()
def pinned_key(url: str, dest: str, fingerprints: tuple[str, ...]):
    """The keyring ``dest`` holds the key from ``url``, whose fingerprints must be exactly ``fingerprints``."""
    if host.get_fact(KeyFingerprints, path=dest) == sorted(f.upper() for f in fingerprints):
        host.noop(f"{dest} holds the pinned key {', '.join(fingerprints)}")
        return
    yield key_script(url, dest, fingerprints)


@operation()
def pinned_download(url: str, dest: str, sha256: str):
    """``dest`` is the file from ``url`` with exactly this sha256; a mismatch leaves nothing at ``dest``."""
    if host.get_fact(Sha256File, path=dest) == sha256:
        host.noop(f"{dest} has the pinned sha256 {sha256[:12]}")
        return
    yield download_script(url, dest, sha256)
