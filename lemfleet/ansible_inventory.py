"""Turn an Ansible inventory into pyinfra groups, so teams deploy to the hosts they already list.

The inventory (INI, YAML or a directory, with ``group_vars``/``host_vars``) is read by
ansible-core's own ``InventoryManager`` and each host's variables are resolved by its
``VariableManager``, so Ansible's precedence rules (host over child group over parent group over
``all``) hold exactly as in a playbook. The result is what a pyinfra inventory module holds:
group name -> list of ``(host name, host data)``.

Connection variables become pyinfra's SSH host data; every other variable that does not start
with ``ansible_`` becomes host data as it is, so ``server_port: 9000`` in ``group_vars/gpu.yml``
sets lemfleet's ``server_port`` for that group. Jinja in values is rendered with Ansible's
``Templar``.

Vault-encrypted values (``!vault`` values and encrypted vars files) are decrypted with
ansible-core's vault code and the password Ansible would use (:mod:`lemfleet.ansible_vault`), all
of them while the inventory loads, so a wrong or missing password stops the run before any host is
contacted. Every value that is or derives from one becomes a :class:`lemfleet.secret.Secret`, which
no dump of host data prints; the steps that write it (the API key file) unwrap it. Connection
variables are the exception: pyinfra must pass them to ssh, so they stay plain even from a vault.

ansible is imported inside the functions that use it: only Ansible inventories need it (0.65 s to
import here), and its first import must run inside :func:`_quiet_ansible_import`.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lemfleet.ansible_vault import PASSWORD_HELP, VaultError, load_secrets, make_loader, secret_names
from lemfleet.secret import Secret

ENV_VAR = "LEMFLEET_ANSIBLE_INVENTORY"

# ansible_* variable -> pyinfra host data (pyinfra/connectors/ssh.py, pyinfra/api/arguments.py).
CONNECTION_VARS = {
    "ansible_host": "ssh_hostname",
    "ansible_ssh_host": "ssh_hostname",
    "ansible_port": "ssh_port",
    "ansible_ssh_port": "ssh_port",
    "ansible_user": "ssh_user",
    "ansible_ssh_user": "ssh_user",
    "ansible_ssh_private_key_file": "ssh_key",
    "ansible_private_key_file": "ssh_key",
    "ansible_become": "_sudo",
    "ansible_become_user": "_sudo_user",
}
SSH_CONNECTIONS = {
    None,
    "ssh",
    "smart",
    "paramiko",
    "ansible.builtin.ssh",
    "ansible.builtin.paramiko_ssh",
}
LOCAL_CONNECTIONS = {"local", "ansible.builtin.local"}
# Variables Ansible adds itself (ansible/vars/manager.py _get_magic_variables).
MAGIC_VARS = {
    "inventory_file",
    "inventory_dir",
    "inventory_hostname",
    "inventory_hostname_short",
    "group_names",
    "groups",
    "playbook_dir",
    "omit",
}

logger = logging.getLogger(__name__)

Groups = dict[str, list[tuple[str, dict[str, Any]]]]


@contextmanager
def _quiet_ansible_import() -> Iterator[None]:
    """Import ansible with the unpatched ``socket.getaddrinfo`` when gevent (pyinfra) patched it.

    ansible-core 2.19 probes ``getaddrinfo`` at import time
    (module_utils/_internal/_patches/_socket_patch.py); under gevent the probe's expected
    failure is printed as a traceback on every pyinfra run.
    """
    try:
        from gevent import monkey
    except ImportError:
        yield
        return
    if not monkey.is_object_patched("socket", "getaddrinfo"):
        yield
        return
    patched = socket.getaddrinfo
    socket.getaddrinfo = monkey.get_original("socket", "getaddrinfo")
    try:
        yield
    finally:
        socket.getaddrinfo = patched


def inventory_path_from_env() -> str:
    """The Ansible inventory path from :data:`ENV_VAR`, or an error saying how to set it."""
    path = os.environ.get(ENV_VAR, "").strip()
    if not path:
        raise ValueError(
            f"{ENV_VAR} is not set; point it at an Ansible inventory (INI, YAML or a directory), "
            f"e.g. {ENV_VAR}=hosts.ini pyinfra inventories/ansible.py deploy.py"
        )
    return path


def _plain(value: Any) -> Any:
    """JSON fallback for values the encoder does not know (dates from YAML, sets)."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def plain_data(value: Any) -> Any:
    """Ansible's tagged values (``_AnsibleTaggedStr`` ...) as plain Python types."""
    return json.loads(json.dumps(value, default=_plain))


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def host_data(
    name: str,
    variables: dict[str, Any],
    templar: Any,
    secrets: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[str, dict[str, Any]]:
    """Map one host's resolved Ansible variables to a pyinfra ``(name, data)`` entry.

    ``secrets`` names the variables that are or derive from vault secrets
    (:func:`lemfleet.ansible_vault.secret_names`); their values become :class:`Secret`.
    """
    from ansible.errors import AnsibleError
    from ansible.module_utils.parsing.convert_bool import boolean

    data: dict[str, Any] = {}
    for key, value in variables.items():
        if key in MAGIC_VARS or (key.startswith("ansible_") and key not in CONNECTION_VARS):
            continue
        secret = key in secrets and key not in CONNECTION_VARS
        if key in secrets or _has_template(value):
            try:
                value = templar.template(value)
            except AnsibleError as err:
                if secret:
                    raise VaultError(f"host {name}: cannot decrypt {key}: {err.message}; {PASSWORD_HELP}") from err
                raise ValueError(f"host {name}: cannot render {key}={value!r}: {err.message}") from err
        data[CONNECTION_VARS.get(key, key)] = Secret(plain_data(value)) if secret else plain_data(value)
    if "_sudo" in data:
        data["_sudo"] = boolean(data["_sudo"])
    if "ssh_port" in data:
        data["ssh_port"] = int(data["ssh_port"])
    connection = variables.get("ansible_connection")
    if connection in LOCAL_CONNECTIONS:
        return "@local", {k: v for k, v in data.items() if not k.startswith("ssh_")}
    if connection not in SSH_CONNECTIONS:
        raise ValueError(
            f"host {name}: ansible_connection={connection!r} is not supported; accepted: ssh, paramiko, smart or local"
        )
    return name, data


def _resolve(loader: Any, variables: Any, host: Any) -> tuple[str, dict[str, Any]]:
    """One host's entry; a vault that cannot be decrypted is named with the host, never with a value."""
    from ansible.errors import AnsibleError
    from ansible.template import Templar

    try:
        resolved = variables.get_vars(host=host, include_hostvars=False)
        templated = {k for k, v in resolved.items() if _has_template(v)}
        secrets = secret_names(loader, resolved, templated)
        return host_data(host.name, resolved, Templar(loader, variables=resolved), secrets)
    except AnsibleError as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, VaultError):
            cause = cause.__cause__ or cause.__context__
        raise VaultError(f"host {host.name}: {cause or err.message}" + ("" if cause else f"; {PASSWORD_HELP}")) from err


def load_ansible_inventory(path: str | os.PathLike[str]) -> Groups:
    """Read an Ansible inventory and return pyinfra groups with fully resolved host data.

    ``all`` is left to pyinfra, which builds it from the other groups; empty groups are dropped.
    """
    with _quiet_ansible_import():
        from ansible.inventory.manager import InventoryManager
        from ansible.vars.manager import VariableManager

    source = Path(path)
    if not source.exists():
        raise ValueError(f"Ansible inventory {source} does not exist")
    loader = make_loader()
    _refuse_locked_inventory(source, has_password=bool(load_secrets(loader)))
    inventory = InventoryManager(loader=loader, sources=[str(source)])
    variables = VariableManager(loader=loader, inventory=inventory)
    entries = {host.name: _resolve(loader, variables, host) for host in inventory.get_hosts()}
    if not entries:
        raise ValueError(f"Ansible inventory {source} lists no hosts")
    local = [name for name, (pyinfra_name, _) in entries.items() if pyinfra_name == "@local"]
    if len(local) > 1:
        raise ValueError(f"hosts {local} all use ansible_connection=local; pyinfra has one @local")
    groups: Groups = {}
    for group_name, group in sorted(inventory.groups.items()):
        members = [entries[h.name] for h in group.get_hosts() if h.name in entries]
        if group_name != "all" and members:
            groups[group_name] = members
    return groups


def _refuse_locked_inventory(source: Path, *, has_password: bool) -> None:
    """An encrypted inventory file with no password: say so (ansible would only warn it cannot parse it)."""
    from ansible.parsing.vault import is_encrypted_file

    if source.is_file() and not has_password:
        with source.open("rb") as handle:
            if is_encrypted_file(handle):
                raise VaultError(
                    f"Ansible inventory {source} is vault-encrypted and no vault password is set; {PASSWORD_HELP}"
                )
