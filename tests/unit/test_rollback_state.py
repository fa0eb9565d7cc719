"""The previous state behind ``lemfleet rollback``, run for real on a temporary directory.

A passing change keeps the state it replaced as the previous one; a
rollback restores it, and after its gate passes the two swap places. The
prune steps never remove the build or the model the previous state uses.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lemfleet.roles.llama_cpp import _prune_script
from lemfleet.roles.model_delivery import prune_script
from lemfleet.roles.transaction import PREVIOUS, Layout, restore_script, snapshot_script, swap_script
from tests.unit.test_transaction import host_layout, link, make_builds, make_models, serve, sh


def kept(directory: str) -> tuple[str, str, str]:
    """(build link, model link, digest) of a kept state."""
    path = Path(directory)
    return os.readlink(path / "build"), os.readlink(path / "model"), (path / "digest").read_text().strip()


def two_states(tmp_path: Path) -> tuple[Layout, Path, Path]:
    """Model A on build b1 passed, then model B on build b2 passed: B is last good, A previous."""
    layout = host_layout(tmp_path)
    b1, b2 = tmp_path / "llama.cpp" / "b1", tmp_path / "llama.cpp" / "b2"
    serve(layout, b1, "/m/a.gguf", "unit a\n", '{"model": "a"}\n', key="key-a-0123456789\n")
    sh(snapshot_script(layout, str(b1), "/m/a.gguf", "da"))
    serve(layout, b2, "/m/b.gguf", "unit b\n", '{"model": "b"}\n')
    sh(snapshot_script(layout, str(b2), "/m/b.gguf", "db"))
    return layout, b1, b2


def test_the_previous_state_sits_beside_the_last_good_one() -> None:
    assert Layout(unit="u", env="e").previous == PREVIOUS == "/var/lib/lemfleet/previous"


def test_a_passing_change_keeps_the_state_it_replaced_as_previous(tmp_path: Path) -> None:
    layout, b1, b2 = two_states(tmp_path)
    assert kept(layout.last_good) == (str(b2), "/m/b.gguf", "db")
    assert kept(layout.previous) == (str(b1), "/m/a.gguf", "da")
    assert Path(layout.previous, "api-key").read_text() == "key-a-0123456789\n"
    assert oct(Path(layout.previous).stat().st_mode)[-3:] == "700"

    # A third state: B becomes previous, A is gone, and nothing is left beside them.
    b3 = tmp_path / "llama.cpp" / "b3"
    serve(layout, b3, "/m/c.gguf", "unit c\n", "{}\n")
    sh(snapshot_script(layout, str(b3), "/m/c.gguf", "dc"))
    assert kept(layout.previous) == (str(b2), "/m/b.gguf", "db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etc", "last-good", "llama.cpp", "previous"]


def test_a_first_snapshot_has_no_previous_state(tmp_path: Path) -> None:
    layout = host_layout(tmp_path)
    serve(layout, tmp_path / "llama.cpp" / "b1", "/m/a.gguf", "unit\n", "{}\n")
    sh(snapshot_script(layout, str(tmp_path / "llama.cpp" / "b1"), "/m/a.gguf", "d1"))
    assert not Path(layout.previous).exists()
    proc = subprocess.run(
        ["bash", "-c", restore_script(layout, layout.previous)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0 and "no previous state" in proc.stderr
    assert Path(layout.unit).read_text() == "unit\n"


def test_rollback_restores_the_previous_state_and_swaps_after_the_gate(tmp_path: Path) -> None:
    layout, b1, b2 = two_states(tmp_path)
    sh(restore_script(layout, layout.previous))
    assert os.readlink(layout.current) == str(b1)
    assert Path(layout.unit).read_text() == "unit a\n"
    assert "LEMFLEET_MODEL=/m/a.gguf" in Path(layout.env).read_text()
    assert Path(layout.record).read_text() == '{"model": "a"}\n'
    assert Path(layout.api_key).read_text() == "key-a-0123456789\n"

    sh(swap_script(layout))
    assert kept(layout.last_good) == (str(b1), "/m/a.gguf", "da")
    assert kept(layout.previous) == (str(b2), "/m/b.gguf", "db")
    assert not Path(f"{layout.last_good}.swap").exists()

    # A second rollback goes forward again.
    sh(restore_script(layout, layout.previous) + "\n" + swap_script(layout))
    assert os.readlink(layout.current) == str(b2) and not Path(layout.api_key).exists()
    assert kept(layout.last_good)[2] == "db" and kept(layout.previous)[2] == "da"


def test_a_failed_rollback_gate_restores_what_served(tmp_path: Path) -> None:
    layout, _, b2 = two_states(tmp_path)
    sh(restore_script(layout, layout.previous))
    sh(restore_script(layout))  # the gate's fallback: the last good state, which served before
    assert os.readlink(layout.current) == str(b2) and Path(layout.record).read_text() == '{"model": "b"}\n'
    assert kept(layout.previous)[2] == "da"  # still there for another try


def test_build_prune_never_removes_the_previous_states_build(tmp_path: Path) -> None:
    builds = make_builds(tmp_path, ["old", "b2", "b3", "b4"])
    link(builds / "current", builds / "b4")
    link(builds / "previous", builds / "b3")
    link(tmp_path / "last-good" / "build", builds / "b4")
    link(tmp_path / "previous" / "build", builds / "old")
    sh(
        _prune_script(
            1,
            builds=str(builds),
            last_good_build=str(tmp_path / "last-good" / "build"),
            previous_build=str(tmp_path / "previous" / "build"),
        )
    )
    assert {p.name for p in builds.iterdir()} == {"old", "b3", "b4", "current", "previous"}


def test_model_prune_never_removes_the_previous_states_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_models(models, ["a.gguf", "x.gguf", "b.gguf", "c.gguf"])
    link(tmp_path / "last-good" / "model", models / "c.gguf")
    link(tmp_path / "previous" / "model", models / "a.gguf")
    script = prune_script(
        str(models),
        str(models / "c.gguf"),
        1,
        str(tmp_path / "last-good" / "model"),
        str(tmp_path / "previous" / "model"),
    )
    sh(script)
    assert {p.name for p in models.glob("*.gguf")} == {"a.gguf", "c.gguf"}


def test_the_kept_states_fact_reads_each_section() -> None:
    from lemfleet.roles.rollback import MARK, parse_kept

    record = '{"backend": "cpu", "service": {"unit": "u.service", "port": 8081, "host": "127.0.0.1"}}'
    # A record over several lines, as deployed.json is written.
    kept = parse_kept([f"{MARK}previous-digest", "dp", f"{MARK}previous-record", *record.split(" ")])
    assert kept.previous_digest == "dp"
    assert kept.previous_record is not None and kept.previous_record["service"]["port"] == 8081
    assert parse_kept([f"{MARK}previous-record", "{not json"]).previous_record is None
    assert parse_kept([]).previous_digest is None


def test_the_gate_checks_every_llama_server_the_previous_record_names() -> None:
    from lemfleet.roles.rollback import KeptStates, targets_of

    defaults = {"server_port": 8080, "server_host": "127.0.0.1"}
    one = {"backend": "cpu", "model": {"alias": "a"}, "service": {"unit": "u.service", "port": 8081, "host": "0.0.0.0"}}
    (target,) = targets_of(one, "u", defaults)
    assert (target.unit, target.port, target.listen_host, target.alias) == ("u.service", 8081, "0.0.0.0", "a")
    two = {**one, "instances": [{"unit": "u@0.service", "port": 8080}, {"unit": "u@1.service", "port": 8081}]}
    assert [(t.unit, t.port) for t in targets_of(two, "u", defaults)] == [("u@0.service", 8080), ("u@1.service", 8081)]
    assert KeptStates("d", two).instance_count() == 2 and KeptStates("d", one).instance_count() == 0
    (bare,) = targets_of(None, "u", defaults)
    assert (bare.unit, bare.port) == ("u.service", 8080)


def test_put_back_stops_the_units_only_the_serving_state_has_before_its_files_go(tmp_path: Path) -> None:
    from lemfleet.roles.rollback import put_back_commands

    layout = host_layout(tmp_path)
    script = put_back_commands(layout, ["u@0.service", "u@1.service"], ["u.service"])
    disable, restore, restart = (
        script.index("systemctl disable --now u@1.service"),
        script.index(f"no previous state in {layout.previous}"),
        script.index("systemctl restart u.service"),
    )
    assert disable < restore < restart and "systemctl enable u.service" in script
