"""The TLS part of ``lemfleet plan``: whether a host serves https, whose certificate, and what clients pin.

A row's ``tls`` object (:func:`tls_entry`) says what the deploy would do (``server_tls``), what the host
serves now (its ``deployed.json``, ``service.tls``) and whether the fingerprint clients pin stays:

- ``mode``: ``off``, ``generate`` or ``files`` (roles/server_tls.py); ``scheme``: ``https`` or ``http``
  after the deploy;
- ``certificate``: ``generated`` (per host, made and kept on the controller), ``operator`` (the
  ``server_tls_cert`` file) or null; ``certificate_path``: the controller file it is read from;
- ``served_now``: ``https`` or ``http`` as the record says, null for a host with no record;
- ``recorded_sha256``: the certificate fingerprint the record holds, which clients pin today;
- ``planned_sha256``: the fingerprint the deploy would serve: the operator's file, or the kept
  generated certificate while it still fits; null when a new one is to be generated, or TLS is off;
- ``pin_changes``: true when a recorded pin will no longer match (new certificate, or TLS off);
- ``note``: all that in one sentence.

Nothing is made or written: a certificate that ``generate`` would make is only announced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lemfleet.roles import server_tls
from lemfleet.tls_client import recorded_fingerprint


def _short(fingerprint: str | None) -> str:
    """The first four bytes of a fingerprint, enough to tell two apart in a table."""
    return (fingerprint or "")[:11] or "?"


def tls_entry(
    name: str, settings: Mapping[str, Any], recorded: Mapping[str, Any] | None, ssh_hostname: str | None = None
) -> dict[str, Any]:
    """The row's ``tls`` object for host ``name`` (see the module doc); reads controller files only."""
    mode = settings.get("server_tls") or "off"
    pinned = recorded_fingerprint(dict(recorded)) if recorded else None
    entry: dict[str, Any] = {
        "mode": mode,
        "scheme": "http" if mode == "off" else "https",
        "certificate": None,
        "certificate_path": None,
        "served_now": None if not recorded else ("https" if pinned else "http"),
        "recorded_sha256": pinned,
        "planned_sha256": None,
        "pin_changes": False,
        "note": "",
    }
    if mode == "off":
        entry["pin_changes"] = pinned is not None
        entry["note"] = "plain HTTP (server_tls='off')" + (
            f"; the host serves https now (clients pin sha256 {pinned}): this deploy turns TLS off" if pinned else ""
        )
        return entry
    problem = None
    if mode == "files":
        entry.update(certificate="operator", certificate_path=settings.get("server_tls_cert"))
        origin = f"the operator's certificate server_tls_cert={settings.get('server_tls_cert')}"
        try:
            entry["planned_sha256"] = server_tls.load_files(
                settings["server_tls_cert"], settings["server_tls_key"]
            ).fingerprint
        except ValueError as err:  # checked with the settings; a file may change in between
            problem = str(err)
    else:
        names = server_tls.host_names(name, settings.get("server_host"), ssh_hostname)
        folder = server_tls.tls_dir() / name.replace("/", "_")
        entry.update(certificate="generated", certificate_path=str(folder / "cert.pem"))
        origin = f"a certificate generated for this host ({', '.join(names)}), kept in {folder}"
        try:
            kept = server_tls.kept_certificate(name, names)
        except ValueError as err:
            kept, problem = None, f"the kept certificate cannot be read ({err}): the deploy makes a new one"
        entry["planned_sha256"] = kept.fingerprint if kept else None
    planned = entry["planned_sha256"]
    entry["pin_changes"] = pinned is not None and planned != pinned
    if problem:
        pin = problem
    elif planned is None:
        pin = "a new one is made at deploy, which prints and records its sha256"
        if pinned:
            pin += f"; clients pinning sha256 {pinned} must move to it"
    elif planned == pinned:
        pin = f"clients pin sha256 {pinned} (recorded), which this deploy keeps"
    elif pinned:
        pin = f"serves sha256 {planned}; clients pinning the recorded {pinned} must move to it"
    else:
        pin = f"clients will pin sha256 {planned}"
    entry["note"] = f"https with {origin}; {pin}"
    return entry


def tls_cell(row: dict[str, Any]) -> str:
    """The table's TLS column: ``-`` for plain HTTP, else the origin and the fingerprint clients pin."""
    tls = row.get("tls")
    if not tls or (tls["mode"] == "off" and not tls["pin_changes"]):
        return "-"
    if tls["mode"] == "off":
        return "off (was https)"
    origin = "gen" if tls["certificate"] == "generated" else "files"
    # What clients pin after the deploy: the certificate it serves, or "new" when one is yet to be made.
    fingerprint = _short(tls["planned_sha256"]) if tls["planned_sha256"] else "new"
    return f"{origin} {fingerprint}" + (" (changes)" if tls["pin_changes"] else "")


def tls_lines(row: dict[str, Any]) -> list[str]:
    """The details' TLS line, for a host that serves or will serve https."""
    tls = row.get("tls")
    if not tls or (tls["mode"] == "off" and not tls["pin_changes"]):
        return []
    return [f"  tls: {tls['note']}"]
