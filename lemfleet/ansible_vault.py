"""Ansible Vault in Ansible inventories: the password as Ansible takes it, decryption up front, secrets kept hidden.

Teams keep ``server_api_key`` and the like in vault-encrypted vars: single ``!vault`` values, or
whole encrypted vars files (``group_vars/fleet/vault.yml``) referenced from plain ones
(``server_api_key: "{{ vault_server_api_key }}"``). lemfleet decrypts them with ansible-core's own
vault code (``VaultLib`` through ``DataLoader`` and ``EncryptedString``), never its own crypto.

- **Password.** Taken from the same configuration ``ansible-playbook`` reads without command-line
  flags: ``ANSIBLE_VAULT_PASSWORD_FILE`` (a file, or an executable script that prints the password)
  and ``ANSIBLE_VAULT_IDENTITY_LIST`` (``id@file`` pairs for several vault ids), or their
  ``ansible.cfg`` keys ``vault_password_file`` and ``vault_identity_list``. Interactive prompts are
  refused: pyinfra loads the inventory with no terminal to ask on.
- **Up front.** Every encrypted value of every host is decrypted while the inventory loads, so a
  wrong or missing password stops the run with a message naming the host and variable, before
  pyinfra opens a single connection.
- **Hidden.** A value that is encrypted, comes from an encrypted file, or is rendered from a
  template that uses one becomes a :class:`lemfleet.secret.Secret` in host data, which every dump
  of host data prints as a placeholder. Whether a template uses a secret is found by rendering it a
  second time with every secret variable replaced by a marker: if the result changes, it depends on
  one (filters such as ``| upper`` cannot hide it).

ansible is imported inside the functions, as in :mod:`lemfleet.ansible_inventory` (which calls them):
only Ansible inventories need it, and it is first imported there, under the unpatched resolver.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

PASSWORD_HELP = (
    "set ANSIBLE_VAULT_PASSWORD_FILE to the vault password file (or a script printing it), or "
    "ANSIBLE_VAULT_IDENTITY_LIST to id@file pairs, as for ansible-playbook"
)
VAULTED_TYPES = {"EncryptedString", "AnsibleVaultEncryptedUnicode"}


class VaultError(ValueError):
    """Ansible Vault content that cannot be decrypted; raised before any host is contacted."""


def is_vaulted(value: Any) -> bool:
    """Whether ``value`` is, or holds, a ``!vault`` value."""
    if type(value).__name__ in VAULTED_TYPES:
        return True
    if isinstance(value, Mapping):
        return any(is_vaulted(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(is_vaulted(v) for v in value)
    return False


def _fingerprint(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _entries(data: Any) -> Iterator[tuple[str, str]]:
    """Every ``(key, value)`` of every mapping inside ``data``: the variables an encrypted file defines."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield str(key), _fingerprint(value)
            yield from _entries(value)
    elif isinstance(data, list | tuple):
        for item in data:
            yield from _entries(item)


def password_sources() -> list[str]:
    """Ansible's vault id slugs (``id@source``) from its configuration, in Ansible's order."""
    from ansible import constants as C

    slugs = list(C.config.get_config_value("DEFAULT_VAULT_IDENTITY_LIST") or [])
    password_file = C.config.get_config_value("DEFAULT_VAULT_PASSWORD_FILE")
    if password_file:
        slugs.append(f"{C.DEFAULT_VAULT_IDENTITY}@{password_file}")
    return slugs


def split_vault_id(slug: str) -> tuple[str | None, str]:
    """``id@source`` -> (id, source); a slug with no ``@`` is all source (as ansible's CLI splits it).

    Written here rather than taken from ``ansible.cli``, whose import exits the process when stdin,
    stdout or stderr is non-blocking, as they can be under pyinfra's gevent and in CI.
    """
    vault_id, at, source = slug.partition("@")
    return (vault_id, source) if at else (None, slug)


def load_secrets(loader: Any) -> list[tuple[str, Any]]:
    """Read every configured vault password, give them to ``loader`` and to ansible's decryption context."""
    from ansible import constants as C
    from ansible.errors import AnsibleError
    from ansible.parsing import vault

    secrets: list[tuple[str, Any]] = []
    for slug in password_sources():
        vault_id, source = split_vault_id(slug)
        name = vault_id or C.DEFAULT_VAULT_IDENTITY
        if source in ("prompt", "prompt_ask_vault_pass"):
            raise VaultError(
                f"Ansible vault id {name!r} asks for a password prompt, which an inventory loaded by pyinfra "
                f"cannot show; {PASSWORD_HELP}"
            )
        try:
            secret = vault.get_file_vault_secret(filename=os.path.expanduser(source), vault_id=vault_id, loader=loader)
            secret.load()
        except AnsibleError as err:
            raise VaultError(
                f"Ansible vault id {name!r}: cannot read the password from {source}: {err.message}"
            ) from err
        secrets.append((name, secret))
    loader.set_vault_secrets(secrets)
    context_type = getattr(vault, "VaultSecretsContext", None)
    if context_type is not None:
        # EncryptedString decrypts with the process-wide context (ansible-core 2.19+); ansible's CLI
        # initializes it once, lemfleet may load several inventories in one process.
        context = context_type.current(optional=True)
        if context is None:
            context_type.initialize(context_type(secrets))
        else:
            context.secrets = secrets
    return secrets


def make_loader() -> Any:
    """A ``DataLoader`` that also remembers the variables defined by the encrypted files it decrypted."""
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import is_encrypted_file

    class RecordingLoader(DataLoader):
        encrypted_entries: set[tuple[str, str]]

        def load_from_file(self, file_name: str, *args: Any, **kwargs: Any) -> Any:
            path = self.path_dwim(file_name)
            with open(path, "rb") as handle:
                encrypted = is_encrypted_file(handle)
            try:
                data = super().load_from_file(file_name, *args, **kwargs)
            except AnsibleError as err:
                if encrypted:
                    raise VaultError(f"cannot decrypt {path}: {err.message}; {PASSWORD_HELP}") from err
                raise
            if encrypted:
                self.encrypted_entries.update(_entries(data))
            return data

    loader = RecordingLoader()
    loader.encrypted_entries = set()
    return loader


def from_encrypted_file(loader: Any, key: str, value: Any) -> bool:
    """Whether an encrypted file that ``loader`` decrypted defines ``key`` with exactly this value."""
    return (key, _fingerprint(value)) in loader.encrypted_entries


def secret_names(loader: Any, variables: Mapping[str, Any], templated: set[str]) -> set[str]:
    """The variables of one host whose value is, comes from, or is rendered from a vault secret.

    ``templated`` names the variables holding Jinja. Those are rendered once with the real values
    and once with every secret variable masked; a template that fails with the masks is counted
    as a secret too.
    """
    from ansible.errors import AnsibleError
    from ansible.template import Templar

    direct = {
        k for k, v in variables.items() if is_vaulted(v) or (k not in templated and from_encrypted_file(loader, k, v))
    }
    if not direct:
        return set()
    masked = dict(variables)
    for number, key in enumerate(sorted(direct)):
        masked[key] = f"lemfleet-vault-mask-{number}"
    real, mask = Templar(loader, variables=dict(variables)), Templar(loader, variables=masked)
    derived = set()
    for key in templated - direct:
        try:
            if _fingerprint(real.template(variables[key])) != _fingerprint(mask.template(variables[key])):
                derived.add(key)
        except AnsibleError:
            derived.add(key)
    return direct | derived
