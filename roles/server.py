"""server: run llama-server under a sandboxed systemd unit, restarted only when something changed.

- The unit file is lemfleet's; users customise through drop-ins
  (``systemctl edit``), which lemfleet never writes, so an
  ``override.conf`` survives every deploy.
- Tunables live in an environment file, so a flag change is a one-line diff.
- Listening beyond loopback needs an API key, stored root-owned with mode
  0640 and group-readable by the service user only.
- The service restarts only when its unit, environment, key, binary or model
  changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import systemd

from lemfleet.api_keys import check_key_setting
from lemfleet.paths import API_KEY_FILE, CONFIG_DIR, SERVER_HOST, SERVER_PORT
from lemfleet.paths import DEPLOY_RECORD as RECORD_FILE
from lemfleet.roles import server_tls, values
from lemfleet.roles.instances import Instance
from lemfleet.roles.instances import check_setting as instances_setting
from lemfleet.roles.ops import absent, directory, put_text, system_user
from lemfleet.roles.plan import HostPlan
from lemfleet.roles.server_flags import env_problems, extra_args_problems
from lemfleet.roles.server_network import allow_from, ip_address_allow
from lemfleet.roles.server_units import Present, layout_of, remove_stale, write_units
from lemfleet.roles.settings import Setting, SettingsError, boolean, defaults, integer, one_of, string_list, text
from lemfleet.secret import reveal

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def extra_args(name: str, value: Any) -> list[str]:
    """The settings check of ``server_extra_args``: a list of single arguments, none of them managed."""
    items = string_list(name, value)
    problems = extra_args_problems(items, name)
    if problems:
        raise ValueError("; ".join(problems))
    return items


SETTINGS = (
    Setting(
        "server_host",
        SERVER_HOST,
        "Address llama-server listens on. Anything but loopback needs server_api_key or server_api_key_file.",
        text(r"[\w.:-]+", "an IP address or host name"),
    ),
    Setting("server_port", SERVER_PORT, "TCP port llama-server listens on.", integer(1, 65535)),
    Setting(
        "server_allow_from",
        None,
        "CIDRs that may connect to a server listening beyond loopback (the unit's IPAddressAllow=, with loopback "
        "and the listen address); None lets any address connect. A loopback server allows loopback only.",
        allow_from,
    ),
    Setting(
        "server_api_key",
        None,
        "API key clients must send (secret: kept on the controller's side until written to a 0640 file on the host).",
        check_key_setting,
        secret=True,
    ),
    Setting(
        "server_api_key_file",
        None,
        "Controller path of a file holding the API key(s), one per line.",
        text(accepted="a path", none_ok=True),
    ),
    Setting(
        "server_metrics_key",
        None,
        "Key Prometheus sends to scrape /metrics (which needs a key when the server has one); added to the host's "
        "key file beside the client keys. `lemfleet prometheus` writes a scrape config that reads it from a file.",
        check_key_setting,
        secret=True,
    ),
    Setting(
        "server_ctx_size",
        None,
        "Total context (-c) shared by the slots; None sizes it from RAM, 0 takes the model's.",
        integer(0, 1 << 22, none_ok=True),
    ),
    Setting(
        "server_parallel",
        None,
        "Parallel slots (-np); None sizes them from cores and RAM.",
        integer(1, 256, none_ok=True),
    ),
    Setting("server_threads", None, "CPU threads (-t); None means the physical cores.", integer(1, 1024, none_ok=True)),
    Setting(
        "server_n_gpu_layers",
        None,
        "Layers offloaded to the GPU (-ngl); None offloads all on a GPU plan and 0 on a CPU plan.",
        integer(0, 999, none_ok=True),
    ),
    Setting("server_flash_attn", "auto", "Flash attention (-fa).", one_of("auto", "on", "off")),
    Setting(
        "server_log_verbosity",
        None,
        "llama-server's log verbosity (-lv, 0-5); None: 4 on a GPU plan, whose load log then shows where the "
        "weights went (the smoke step checks it), 3 (llama-server's default) otherwise.",
        integer(0, 5, none_ok=True),
    ),
    Setting(
        "server_extra_args",
        [],
        "Extra llama-server arguments, one argument per item, appended after lemfleet's own; flags lemfleet sets "
        "(--host, --port, --api-key-file, -m and the rest in roles/server_flags.py) are refused.",
        extra_args,
    ),
    Setting("server_user", "lemfleet", "System user the service runs as.", text(r"[a-z_][a-z0-9_-]*", "a user name")),
    Setting(
        "server_unit_name", "lemfleet-llama", "systemd unit name (without .service).", text(r"[\w@.-]+", "a unit name")
    ),
    Setting("server_enabled", True, "Start the service at boot.", boolean),
    Setting(
        "server_instances",
        None,
        "llama-server processes per host: 'one' (one server across the chosen GPUs), 'per-gpu' (one per GPU, MIG "
        "instance or partition, on server_port + N), 'auto' (per-gpu when 2 or more devices and the model with its "
        "context fits one), or an integer N (N replicas; on the CPU the threads are split). None: auto, except that "
        "a host deployed before instances keeps its one server until this is set.",
        instances_setting,
    ),
    *server_tls.SETTINGS,
)
DEFAULTS = defaults(SETTINGS)

# Every {{ }} in the templates must pass a filter of roles/values.py: finalize refuses anything else.
_jinja = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    finalize=values.require_escaped,
)
_jinja.filters.update(values.FILTERS)


def _render(template: str, **context: Any) -> str:
    """Render a lemfleet template; a value that cannot be written safely is a :class:`SettingsError`."""
    try:
        return _jinja.get_template(template).render(**context)
    except values.UnsafeValue as err:
        raise SettingsError([str(err)]) from err


def unit_path(unit_name: str) -> str:
    return f"/etc/systemd/system/{unit_name}.service"


def env_path(unit_name: str) -> str:
    return f"{CONFIG_DIR}/{unit_name}.env"


def managed_paths(unit_name: str) -> list[str]:
    """The paths this step writes, for the one state probe (roles/hoststate.py)."""
    return [CONFIG_DIR, API_KEY_FILE, server_tls.CERT_FILE, server_tls.KEY_FILE, env_path(unit_name),
            unit_path(unit_name), RECORD_FILE]  # fmt: skip


def render_unit(
    plan: HostPlan,
    *,
    unit_name: str,
    user: str,
    binary: str,
    api_key_file: str | None,
    supplementary_groups: Sequence[str] = (),
    allow_from: Sequence[str] | str | None = None,
    per_instance: bool = False,
    tls: bool = False,
) -> str:
    """The unit file; each value is checked and quoted for the directive it lands in (roles/values.py).

    ``per_instance`` makes it the template ``<unit>@.service`` of several instances, whose environment
    file, port and devices are in each instance's drop-in (:func:`render_dropin`, roles/server_units.py).

    ``allow_from`` (``server_allow_from``) and the plan's listen address make ``IPAddressAllow=``
    (roles/server_network.py); ``SocketBindAllow=`` takes the plan's port, the one ``--port`` gets.

    ``tls`` adds ``--ssl-cert-file``/``--ssl-key-file`` with the files :func:`install_server` writes
    (roles/server_tls.py); without it the unit is exactly what it was before TLS existed.
    """
    return _render(
        "lemfleet-llama.service.j2",
        unit_name=unit_name,
        user=user,
        alias=plan.alias,
        binary=binary,
        env_file=env_path(unit_name),
        api_key_file=api_key_file,
        device_nodes=plan.device_nodes,
        supplementary_groups=list(supplementary_groups),
        port=plan.port,
        ip_address_allow=ip_address_allow(plan.listen_host, allow_from),
        per_instance=per_instance,
        tls=tls,
        tls_cert_file=server_tls.CERT_FILE,
        tls_key_file=server_tls.KEY_FILE,
    )


def render_dropin(instance: Instance, *, unit_name: str, env_file: str) -> str:
    """The drop-in of one instance of the template: its environment file, port and devices."""
    return _render("lemfleet-llama-instance.conf.j2", unit_name=unit_name, index=instance.index or 0,
                   env_file=env_file, port=instance.port, device_nodes=instance.device_nodes)  # fmt: skip


def render_env(plan: HostPlan, *, unit_name: str, model_path: str, extra_args: Sequence[str]) -> str:
    """The environment file; each value double-quoted and escaped, the extra arguments kept one per word."""
    args = list(extra_args)
    # The planned variables (visible devices, HSA override) must not set a flag lemfleet passes itself.
    problems = env_problems(plan.run_env, "the plan's service environment")
    if problems:
        raise SettingsError(problems)
    if plan.tensor_split:
        args += ["--tensor-split", ",".join(f"{s:g}" for s in plan.tensor_split)]
    return _render("lemfleet-llama.env.j2", unit_name=unit_name, plan=plan, model_path=model_path, extra_args=args)


def api_keys(data: Any) -> str | None:
    """The key file's content, from the settings, or None when no key is configured."""
    # Both were checked before any host was contacted (lemfleet.api_keys), so they are written as they are.
    if data.get("server_api_key") is not None:
        keys = str(reveal(data.get("server_api_key"))) + "\n"  # a Secret when it came from Ansible Vault
    elif data.get("server_api_key_file"):
        keys = Path(data.get("server_api_key_file")).expanduser().read_text()
    else:
        keys = ""
    if data.get("server_metrics_key") is not None:
        # After the client keys, so that the first key (the one the smoke step sends) is a client's.
        keys += ("" if not keys or keys.endswith("\n") else "\n") + str(reveal(data.get("server_metrics_key"))) + "\n"
    return keys or None


def host_tls(data: Any) -> server_tls.TlsFiles | None:
    """The current host's certificate and key (server_tls), for its inventory name, listen address and SSH name."""
    return server_tls.tls_for_host(data, host.name, data.get("server_host"), data.get("ssh_hostname"))


@deploy("Install and start llama-server", data_defaults=DEFAULTS)
def install_server(
    plan: HostPlan,
    binary: str,
    model_path: str,
    restart_when: list[OperationMeta],
    supplementary_groups: Sequence[str] = (),
    present: Present | None = None,
) -> tuple[OperationMeta, str]:
    """Write the unit, environment and key files and (re)start the service when anything changed.

    With several instances (``plan.instances``, roles/instances.py) the unit is a template and each
    instance has its own environment file and drop-in; ``present`` (the host's :class:`InstanceUnits`
    before this deploy) says what a change of layout leaves to stop and remove.

    Returns the environment step and a digest of the three files' content,
    which names this serving state for the transaction (roles/transaction.py,
    which also writes ``deployed.json`` once the state passed the gate).
    """
    data = host.data
    user, unit_name = data.get("server_user"), data.get("server_unit_name")
    system_user(name=f"Service user {user}", user=user, home="/var/lib/lemfleet", groups=supplementary_groups)
    directory(name=f"Directory {CONFIG_DIR}", path=CONFIG_DIR)

    keys = api_keys(data)
    changes = list(restart_when)
    if keys is not None:
        # Uploaded from memory into a file made 0600 first; compared by sha256, never diffed.
        changes.append(
            put_text(name="API key file", dest=API_KEY_FILE, content=keys, user="root", group=user, mode="640",
                     secret=True)
        )  # fmt: skip
    else:
        changes.append(absent(name="No API key file", path=API_KEY_FILE))
    # llama-server reads both at start: a new certificate or key restarts it once, through the gate.
    tls = host_tls(data)
    if tls is not None:
        changes.append(put_text(name="TLS certificate", dest=server_tls.CERT_FILE, content=tls.cert_pem))
        changes.append(
            put_text(name="TLS key file", dest=server_tls.KEY_FILE, content=tls.key_pem, user="root", group=user,
                     mode="640", secret=True)
        )  # fmt: skip
        # For clients to pin (also in deployed.json, service.tls); printed at info level, unlike a noop.
        host.log_styled(f"TLS certificate sha256 fingerprint: {tls.fingerprint}", fg="cyan", log_func=logger.info)
    else:
        changes.append(absent(name="No TLS certificate", path=server_tls.CERT_FILE))
        changes.append(absent(name="No TLS key file", path=server_tls.KEY_FILE))

    instances = layout_of(plan)
    templated = instances[0].index is not None
    stale = remove_stale(name=f"No stale instance of {unit_name}", unit_name=unit_name, present=present or Present(),
                         keep=[i.index for i in instances if i.index is not None], templated=templated)  # fmt: skip
    unit_text = render_unit(
        plan,
        unit_name=unit_name,
        user=user,
        binary=binary,
        api_key_file=API_KEY_FILE if keys is not None else None,
        supplementary_groups=supplementary_groups,
        allow_from=data.get("server_allow_from"),
        per_instance=templated,
        tls=tls is not None,
    )
    extra = data.get("server_extra_args")
    written = write_units(
        plan,
        unit_name=unit_name,
        unit_text=unit_text,
        env_text=lambda p, name: render_env(p, unit_name=name, model_path=model_path, extra_args=extra),
        dropin_text=lambda i, env_file: render_dropin(i, unit_name=unit_name, env_file=env_file),
    )
    reload_when = [stale, *written.reload_when]
    systemd.daemon_reload(name="Reload systemd", _if=lambda: any(op.did_change() for op in reload_when))
    # A start that fails here is the health gate's to judge (roles/gate.py): it reads the unit's state and
    # journal and puts the last good state back, so these two do not stop the host themselves.
    for unit, own in written.units:
        restart_when_changed = [*changes, *own]
        systemd.service(
            name=f"Restart {unit.removesuffix('.service')}",
            service=unit,
            restarted=True,
            _if=lambda ops=restart_when_changed: any(op.did_change() for op in ops),  # type: ignore[misc]
            _ignore_errors=True,
        )
        systemd.service(
            name=f"{unit.removesuffix('.service')} running",
            service=unit,
            running=True,
            enabled=data.get("server_enabled"),
            _ignore_errors=True,
        )
    key_digest = hashlib.sha256(keys.encode()).hexdigest() if keys is not None else "no key"
    tls_digest = [f"tls {tls.fingerprint} {hashlib.sha256(tls.key_pem.encode()).hexdigest()}"] if tls else []
    files_digest = hashlib.sha256("\n".join([*written.texts, key_digest, *tls_digest]).encode()).hexdigest()
    return written.units[0][1][-1], files_digest
