"""Hostile strings in every setting and every derived value: refused by name, or written harmlessly.

For each value hypothesis makes (newlines, NUL, ``$()``, backticks, quotes,
``;``, ``%`` specifiers, unicode, 10k characters), either the settings check
refuses it before any host is contacted with a message naming the setting,
or the unit and environment file it renders:

- hold exactly the directives and environment keys of a clean rendering,
- give the ``ExecStart=`` argv that was intended, value for value, when read
  back by the rules of systemd.exec(5)/systemd.service(5)
  (``tests/unit/systemd_syntax.py``), and
- load in ``systemd-analyze verify`` (one batch per test, to keep CI fast).

``LEMFLEET_FUZZ_EXAMPLES`` sets the examples per property (default 40 under the ``ci`` hypothesis profile,
10 under the quicker ``dev`` default; see tests/unit/conftest.py).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2 import Environment

from lemfleet.paths import API_KEY_FILE as KEY_FILE
from lemfleet.roles import values
from lemfleet.roles.detect import facts_from_sections
from lemfleet.roles.facts.host import split_sections
from lemfleet.roles.model_delivery import ModelArtifact, default_alias
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.server import render_env, render_unit
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import all_settings, validate
from lemfleet.roles.value_rules import model_file_name
from lemfleet.roles.values import MAX_BYTES
from tests.unit.systemd_syntax import exec_words, parse_env_file, substitute, unit_directives

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "host" / "debian12-nspawn-probe.txt"
FACTS = facts_from_sections(split_sections(FIXTURE.read_text().splitlines()))
# Examples per property: LEMFLEET_FUZZ_EXAMPLES, else 40 under the ci profile and 10 under dev (tests/unit/conftest.py).
EXAMPLES = int(os.environ.get("LEMFLEET_FUZZ_EXAMPLES") or (40 if settings().max_examples >= 100 else 10))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SHA = "0" * 64
BINARY = "/opt/lemfleet/llama.cpp/current/bin/llama-server"

HOSTILE = [
    "a\nExecStartPre=+/bin/sh -c id",
    "m.gguf\nExecStartPre=+/usr/bin/touch /pwned",
    "x\x00y",
    "x\ry",
    "$(touch /tmp/pwned)",
    "`id`",
    "${PATH}",
    "$HOME",
    "'",
    '"',
    '";id;"',
    "a; rm -rf /",
    "%n%i%%",
    "\\",
    "a\\",
    "é",
    "模型",
    "\u202eevil",
    "\u2028",
    "\ufeff",
    "\ud800",
    "--upload-pack=touch /tmp/pwned",
    "-x",
    "a" * 10_000,
    " ",
    "",
]
SPECIALS = "\n\r\t\x00\x1b\x7f$`'\";%\\ ()&|<>*?{}[]#=~-é\u202e\u2028/."
hostile = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet=st.sampled_from(SPECIALS + "ab0"), max_size=24),
    st.builds(lambda a, b, c: a + b + c, st.text(max_size=8), st.sampled_from(HOSTILE), st.text(max_size=8)),
    st.text(max_size=40),
)

# Settings that need company to be in effect: the hostile value goes in with these.
CONTEXT: dict[str, dict[str, Any]] = {
    "model_path": {"model_source": "local"},
    "model_url": {"model_source": "url", "model_sha256": SHA},
    "model_file": {"model_source": "hub"},
    "server_api_key": {"server_host": "0.0.0.0"},
    "llama_cpp_tarball": {"llama_cpp_source": "tarball", "llama_cpp_tarball_sha256": SHA},
    "llama_cpp_git_url": {"llama_cpp_source": "git"},
    "llama_cpp_git_ref": {"llama_cpp_source": "git"},
}
NAMES = [s.name for s in all_settings()]
LIST_SETTINGS = {s.name for s in all_settings() if isinstance(s.default, list)}


def expected_argv(plan: Any, model_path: str, extra: list[str], key_file: str | None) -> list[str]:
    argv = [
        BINARY,
        *("--host", plan.listen_host, "--port", str(plan.port), "--model", model_path, "--alias", plan.alias),
        *("--threads", str(plan.threads), "--ctx-size", str(plan.ctx_size), "--parallel", str(plan.parallel)),
        *("--n-gpu-layers", str(plan.n_gpu_layers), "--flash-attn", plan.flash_attn),
        *("--log-verbosity", str(plan.log_verbosity), "--metrics"),
    ]
    if key_file:
        argv += ["--api-key-file", key_file]
    return argv + extra


def render(s: dict[str, Any]) -> tuple[str, str]:
    """Render as the deploy would for these settings: the alias and the model's path on the host derived from them."""
    named = model_file_name(s)
    file_name = posixpath.basename(named[1]) if named else "LEM-Gemma3-1B-Q4_K_M.gguf"
    alias = s["model_alias"] or default_alias(file_name)
    artifact = ModelArtifact(
        alias, file_name, SHA, 1, host_path=s["model_path"] if s["model_source"] == "host" else None
    )
    model_path = artifact.path_on_host(s["model_dir"])
    plan = plan_host(FACTS, s, ModelInfo(alias, 5_000_000))
    key_file = KEY_FILE if plan.needs_api_key else None
    unit = render_unit(plan, unit_name=s["server_unit_name"], user=s["server_user"], binary=BINARY,
                       api_key_file=key_file)  # fmt: skip
    env = render_env(plan, unit_name=s["server_unit_name"], model_path=model_path, extra_args=s["server_extra_args"])
    check_reads_back(unit, env, plan, model_path, list(s["server_extra_args"]), key_file)
    return unit, env


def check_reads_back(unit: str, env: str, plan: Any, model_path: str, extra: list[str], key_file: str | None) -> None:
    directives = unit_directives(unit)
    if CLEAN:
        assert [key for key, _ in directives] == CLEAN["directives"]
        assert set(parse_env_file(env)) == CLEAN["keys"]
    values = dict(directives)
    argv = substitute(exec_words(values["ExecStart"]), parse_env_file(env))
    assert argv == expected_argv(plan, model_path, extra, key_file)
    assert values["Description"].replace("%%", "%") == f"llama-server serving {plan.alias.strip()} (lemfleet)"
    assert values["User"] == values["Group"]


CLEAN: dict[str, Any] = {}
_unit, _env = render(validate({}))
CLEAN.update(directives=[key for key, _ in unit_directives(_unit)], keys=set(parse_env_file(_env)))


def systemd_verify(units: list[str], tmp_path: Path) -> None:
    """Every rendered unit loads in systemd-analyze verify (one call for all of them)."""
    assert shutil.which("systemd-analyze"), (
        "systemd-analyze is needed to check the rendered units (apt install systemd)"
    )
    if not units:
        return
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    paths = []
    for i, unit in enumerate(units):
        path = tmp_path / f"lemfleet-fuzz-{i}.service"
        path.write_text(unit.replace(f'ExecStart="{BINARY}"', f'ExecStart="{binary}"'))
        paths.append(str(path))
    proc = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, check=False)
    problems = [line for line in proc.stderr.splitlines() if "lemfleet-fuzz" in line]
    assert proc.returncode == 0 and not problems, proc.stderr[-3000:]


def refused_by_name(err: SettingsError, *names: str) -> None:
    text = str(err)
    assert any(name in text for name in names), text
    assert "Traceback" not in text


@pytest.mark.parametrize("name", NAMES)
def test_every_setting_refuses_or_renders_hostile_strings(name, tmp_path):
    units: list[str] = []

    @FUZZ
    @given(value=hostile)
    def prop(value: str) -> None:
        data = {**CONTEXT.get(name, {}), name: [value] if name in LIST_SETTINGS else value}
        try:
            s = validate(data)
        except SettingsError as err:
            refused_by_name(err, name)
            return
        try:
            plan_host(FACTS, s, ModelInfo("tiny", 5_000_000))
        except SettingsError as err:  # a value that depends on the host's hardware (gpu_devices='0' and no GPU)
            refused_by_name(err, name)  # is refused by the plan, from the facts, before any change
            return
        try:
            unit, _env = render(s)
        except SettingsError as err:  # refused at rendering: still before any change, and by name
            pytest.fail(f"{name}={value!r} passed the settings check but was refused only when rendered: {err}")
        units.append(unit)

    prop()
    systemd_verify(units[:40], tmp_path)


@pytest.mark.parametrize(
    ("setting", "make"),
    [
        ("model_path", lambda v: {"model_source": "local", "model_path": f"/models/{v}.gguf"}),
        ("model_path", lambda v: {"model_source": "host", "model_path": f"/srv/{v}-Q4_K_M.gguf", "model_sha256": SHA}),
        ("model_url", lambda v: {"model_source": "url", "model_url": f"https://h/{v}.gguf", "model_sha256": SHA}),
        ("model_file", lambda v: {"model_source": "hub", "model_file": f"{v}-Q8_0.gguf"}),
        ("model_dir", lambda v: {"model_dir": f"/srv/{v}"}),
    ],
)
def test_aliases_and_file_names_made_from_hostile_names(setting, make, tmp_path):
    units: list[str] = []

    @FUZZ
    @given(value=hostile)
    def prop(value: str) -> None:
        try:
            s = validate(make(value))
        except SettingsError as err:
            refused_by_name(err, setting)
            return
        units.append(render(s)[0])

    prop()
    systemd_verify(units[:40], tmp_path)


@FUZZ
@given(model_path=hostile, alias=hostile, node=hostile, env_value=hostile)
def test_derived_values_given_straight_to_the_renderer(model_path, alias, node, env_value):
    """Values that reach the renderer without a setting (a hub file name, a host's device node) are refused or safe."""
    s = validate({})
    plan = plan_host(FACTS, s, ModelInfo(alias, 1))
    plan = plan.__class__(**{**plan.__dict__, "device_nodes": (node,), "run_env": {"GGML_VK_VISIBLE": env_value}})
    try:
        unit = render_unit(plan, unit_name="lemfleet-llama", user="lemfleet", binary=BINARY, api_key_file=None)
        env = render_env(plan, unit_name="lemfleet-llama", model_path=model_path, extra_args=[])
    except SettingsError:
        return
    argv = substitute(exec_words(dict(unit_directives(unit))["ExecStart"]), parse_env_file(env))
    assert argv == expected_argv(plan, model_path, [], None)
    assert parse_env_file(env)["GGML_VK_VISIBLE"] == env_value
    assert [k for k, _ in unit_directives(unit) if k == "DeviceAllow"] == ["DeviceAllow"]


def test_a_two_megabyte_alias_is_refused_by_name_before_any_host():
    """The case that once made a unit systemd could not load: refused by the settings check, with the cap."""
    with pytest.raises(SettingsError) as caught:
        validate({"model_alias": "a" * 2 * 1024 * 1024})
    text = str(caught.value)
    assert "model_alias=" in text and f"accepted: at most {MAX_BYTES} bytes" in text, text
    assert len(text) < 2000, "the message shows the value shortened, not 2 MB of it"


def test_a_template_value_that_skipped_the_escaping_filters_is_refused():
    """The template guard itself: a ``{{ }}`` that did not pass through roles/values.py does not render."""
    env = Environment(finalize=values.require_escaped)
    env.filters.update(values.FILTERS)
    with pytest.raises(TypeError, match=r"did not pass through lemfleet\.roles\.values"):
        env.from_string("ExecStart=/bin/x {{ raw }}").render(raw="; rm -rf /")
    assert env.from_string('A={{ v | env("x") }}').render(v="ok") == 'A="ok"'
