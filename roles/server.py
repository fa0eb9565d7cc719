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

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import systemd

from lemfleet.roles.ops import absent, directory, put_text, system_user
from lemfleet.roles.plan import HostPlan
from lemfleet.roles.settings import Setting, boolean, defaults, integer, one_of, string_list, text

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
CONFIG_DIR = "/etc/lemfleet"
API_KEY_FILE = f"{CONFIG_DIR}/api-key"
RECORD_FILE = f"{CONFIG_DIR}/deployed.json"

SETTINGS = (
    Setting(
        "server_host",
        "127.0.0.1",
        "Address llama-server listens on. Anything but loopback needs server_api_key or server_api_key_file.",
        text(r"[\w.:-]+", "an IP address or host name"),
    ),
    Setting("server_port", 8080, "TCP port llama-server listens on.", integer(1, 65535)),
    Setting(
        "server_api_key",
        None,
        "API key clients must send (secret: kept on the controller's side until written to a 0640 file on the host).",
        text(accepted="a non-empty key", none_ok=True),
        secret=True,
    ),
    Setting(
        "server_api_key_file",
        None,
        "Controller path of a file holding the API key(s), one per line.",
        text(accepted="a path", none_ok=True),
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
    Setting("server_extra_args", [], "Extra llama-server arguments, appended as they are.", string_list),
    Setting("server_user", "lemfleet", "System user the service runs as.", text(r"[a-z_][a-z0-9_-]*", "a user name")),
    Setting(
        "server_unit_name", "lemfleet-llama", "systemd unit name (without .service).", text(r"[\w@.-]+", "a unit name")
    ),
    Setting("server_enabled", True, "Start the service at boot.", boolean),
)
DEFAULTS = defaults(SETTINGS)

_jinja = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def unit_path(unit_name: str) -> str:
    return f"/etc/systemd/system/{unit_name}.service"


def env_path(unit_name: str) -> str:
    return f"{CONFIG_DIR}/{unit_name}.env"


def managed_paths(unit_name: str) -> list[str]:
    """The paths this step writes, for the one state probe (roles/hoststate.py)."""
    return [CONFIG_DIR, API_KEY_FILE, env_path(unit_name), unit_path(unit_name), RECORD_FILE]


def render_unit(
    plan: HostPlan,
    *,
    unit_name: str,
    user: str,
    binary: str,
    api_key_file: str | None,
    supplementary_groups: Sequence[str] = (),
) -> str:
    return _jinja.get_template("lemfleet-llama.service.j2").render(
        unit_name=unit_name,
        user=user,
        alias=plan.alias,
        binary=binary,
        env_file=env_path(unit_name),
        api_key_file=api_key_file,
        device_nodes=plan.device_nodes,
        supplementary_groups=list(supplementary_groups),
    )


def render_env(plan: HostPlan, *, unit_name: str, model_path: str, extra_args: Sequence[str]) -> str:
    args = list(extra_args)
    if plan.tensor_split:
        args += ["--tensor-split", ",".join(f"{s:g}" for s in plan.tensor_split)]
    return _jinja.get_template("lemfleet-llama.env.j2").render(
        unit_name=unit_name, plan=plan, model_path=model_path, extra_args=" ".join(args)
    )


def api_keys(data: Any) -> str | None:
    """The key file's content, from the settings, or None when no key is configured."""
    if data.get("server_api_key"):
        return str(data.get("server_api_key")).strip() + "\n"
    if data.get("server_api_key_file"):
        return Path(data.get("server_api_key_file")).expanduser().read_text()
    return None


@deploy("Install and start llama-server", data_defaults=DEFAULTS)
def install_server(
    plan: HostPlan,
    binary: str,
    model_path: str,
    restart_when: list[OperationMeta],
    record: dict[str, Any],
    supplementary_groups: Sequence[str] = (),
) -> OperationMeta:
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

    env_text = render_env(plan, unit_name=unit_name, model_path=model_path, extra_args=data.get("server_extra_args"))
    environment = put_text(name="Service environment", dest=env_path(unit_name), content=env_text)
    changes.append(environment)
    unit_text = render_unit(
        plan,
        unit_name=unit_name,
        user=user,
        binary=binary,
        api_key_file=API_KEY_FILE if keys is not None else None,
        supplementary_groups=supplementary_groups,
    )
    unit = put_text(name=f"Unit {unit_name}.service", dest=unit_path(unit_name), content=unit_text)
    changes.append(unit)

    systemd.daemon_reload(name="Reload systemd", _if=unit.did_change)
    systemd.service(
        name=f"Restart {unit_name}",
        service=f"{unit_name}.service",
        restarted=True,
        _if=lambda: any(op.did_change() for op in changes),
    )
    systemd.service(
        name=f"{unit_name} running", service=f"{unit_name}.service", running=True, enabled=data.get("server_enabled")
    )
    put_text(name="Deploy record", dest=RECORD_FILE, content=json.dumps(record, indent=2, sort_keys=True) + "\n")
    return environment
