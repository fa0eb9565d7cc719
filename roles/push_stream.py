"""Push a large file to a host and verify its sha256 while it arrives, not by reading it again after.

The host writes the stream to ``<dest>.partial`` through a tee (core Perl's, reading up to 1 MiB at a
time, where perl runs; else coreutils' ``tee``) and hashes the same bytes as they pass, so once the
last byte is written the sha256 is known: the file is renamed into place and its check record
(``<dest>.verified``) written only when it matches. A mismatch, a cut stream or a write that fails
removes the temporary file and leaves ``dest`` as it was. Nothing reads the file again.

The bytes go through the system's OpenSSH client with the host's own pyinfra SSH data (``ssh ...
'script' < file``), one process per host: pyinfra's own upload is paramiko's SFTP, which runs the
crypto of every host in pyinfra's one Python thread and moves bulk data at about half the rate of
scp (``bench/model_push.py``). Under ``--sudo``/``--doas``/``--dzdo`` the script runs through the
same escalation pyinfra uses for its own commands (``make_unix_command``) and writes straight into
the root-owned directory, never through a staging file in ``/tmp``. Where that cannot run without a
prompt (a sudo password, ``su``), :func:`can_stream` says no and the caller uses pyinfra's upload.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import StringCommand
from pyinfra.connectors.ssh import SSHConnector
from pyinfra.connectors.util import make_unix_command

from lemfleet.roles.hoststate import SIDECAR
from lemfleet.sshtunnel import SshOptions

# Below this size pyinfra's own upload is as quick as starting one more SSH connection.
STREAM_THRESHOLD = 64 * 1024**2
# pyinfra's global arguments that shape the command and need no prompt, passed on to make_unix_command.
ESCALATION_KEYS = (
    "_sudo", "_sudo_user", "_use_sudo_login", "_preserve_sudo_env",
    "_doas", "_doas_user", "_dzdo", "_dzdo_user", "_shell_executable",
)  # fmt: skip
# The ones that need a password or a terminal: the stream takes stdin, so none can be answered.
PROMPTING_KEYS = ("_sudo_password", "_su_user", "_su_password", "_use_su_login")

# sha256 on the host: OpenSSL's (several times quicker where the CPU has SHA instructions; on Debian it
# comes with ca-certificates) when it runs, else coreutils'. Both print the hex digest first.
HASHER = "h=sha256sum; if openssl dgst -sha256 -r </dev/null >/dev/null 2>&1; then h='openssl dgst -sha256 -r'; fi; "
# The tee on the host: stdin to the file named and to stdout. GNU tee moves 8 KiB per read and two writes;
# core Perl (perl-base is Essential on Debian and Ubuntu) moves what the pipe holds, up to 1 MiB: the host's
# whole side of the push took 0.88x the CPU per GiB with it (`bench/model_push.py host`: 2.64 s against 3.08 s,
# medians of 5 paired rounds). A read or write that fails ends it non-zero, as tee's does.
PERL_TEE = (
    'open(my $o, ">", $ARGV[0]) or die "lemfleet: cannot write $ARGV[0]: $!\\n"; binmode STDIN; binmode STDOUT; '
    "for (;;) { my $n = sysread(STDIN, my $b, 1048576); "
    'die "lemfleet: reading the stream failed: $!\\n" unless defined $n; last unless $n; '
    "for my $fh ($o, *STDOUT) { my $at = 0; while ($at < $n) { my $w = syswrite($fh, $b, $n - $at, $at); "
    'die "lemfleet: writing $ARGV[0] failed: $!\\n" unless defined $w; $at += $w; } } } '
    'close($o) or die "lemfleet: writing $ARGV[0] failed: $!\\n";'
)
WRITER = (
    f'if perl -e 1 >/dev/null 2>&1; then lemfleet_tee() {{ perl -e {quote(PERL_TEE)} -- "$1"; }}; '
    'else lemfleet_tee() { tee -- "$1"; }; fi; '
)


def place_command(tmp: str, dest: str, sha256: str) -> str:
    """Shell that renames the checked ``tmp`` to ``dest`` and records the check beside it."""
    return (
        f"mv -f {quote(tmp)} {quote(dest)} && "
        f'echo {quote(sha256)}" $(stat -c "%s %Y" {quote(dest)})" > {quote(dest + SIDECAR)}'
    )


def stream_script(tmp: str, dest: str, sha256: str, mode: str, what: str) -> str:
    """The host's side of a push (pure; the unit tests run it): stdin to ``tmp``, hashed on the way.

    The tee (:data:`WRITER`: Perl's, else ``tee``) writes the file and passes the same bytes to the
    hasher; a write that fails is reported on fd 3, beside the digest, so it is told apart from a mismatch.
    """
    rejected = f"rejected, {dest} left as it was"
    return (
        HASHER
        + WRITER
        + f"got=$( {{ {{ lemfleet_tee {quote(tmp)} || echo lemfleet-write-failed >&3; }} | $h; }} 3>&1 ); "
        f"case $got in *lemfleet-write-failed*) rm -f -- {quote(tmp)}; "
        f"echo {quote(f'writing {tmp} failed (above): {rejected}')} >&2; exit 1;; esac; "
        f"got=${{got%% *}}; "
        f'if [ "$got" != {quote(sha256)} ]; then rm -f -- {quote(tmp)}; '
        f'echo {quote(f"sha256 mismatch for {what}: expected {sha256}, received ")}"${{got:-nothing}}"'
        f"{quote(f': {rejected}')} >&2; exit 1; fi; "
        f"chmod {quote(mode)} {quote(tmp)} && " + place_command(tmp, dest, sha256)
    )


def can_stream(src: str) -> bool:
    """Whether this operation's upload of ``src`` goes through :func:`push` (else pyinfra's upload).

    An SSH host, reached by key (a password cannot be given to a batch-mode ``ssh``), a file of at
    least ``STREAM_THRESHOLD`` bytes, and no escalation that would prompt.
    """
    arguments: Mapping[str, Any] = host.current_op_global_arguments or {}
    return (
        isinstance(host.connector, SSHConnector)
        and not host.data.get("ssh_password")
        and shutil.which("ssh") is not None
        and os.path.getsize(src) >= STREAM_THRESHOLD
        and not any(arguments.get(name) for name in PROMPTING_KEYS)
        and not host.connector_data.get("prompted_sudo_password")
    )


def escalation() -> dict[str, Any]:
    """This operation's escalation arguments (``_sudo`` and the like), for :func:`remote_command`."""
    arguments: Mapping[str, Any] = host.current_op_global_arguments or {}
    return {name: arguments[name] for name in ESCALATION_KEYS if arguments.get(name)}


def remote_command(script: str, arguments: Mapping[str, Any]) -> str:
    """``script`` under the escalation pyinfra would use for this operation's commands."""
    return str(make_unix_command(StringCommand(script), **arguments).get_raw_value())


def push(state: Any, host: Any, src: str, command: str) -> bool:  # pyinfra passes state and host by name
    """``ssh host command < src`` with the host's own SSH settings; True when the host accepted it.

    The remote command's own words (a mismatch, a failed write, sudo's refusal) end the host's log line.
    """
    options = SshOptions.from_host_data(host.name, host.data)
    with open(src, "rb") as source:
        proc = subprocess.run(options.command(remote=[command]), stdin=source, capture_output=True, check=False)
    if proc.returncode != 0:
        words = proc.stderr.decode(errors="replace").strip()[-600:]
        host.log_styled(f"push of {src} failed: {words}", fg="red")
        return False
    return True


__all__ = ["STREAM_THRESHOLD", "can_stream", "escalation", "place_command", "push", "remote_command", "stream_script"]
