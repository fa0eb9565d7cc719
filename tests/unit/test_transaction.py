"""The transaction's shell, run for real on a temporary directory: prune, keep, adopt, restore.

No host is needed: the scripts are plain POSIX shell over files and
symlinks, and each test builds the layout they act on with real links.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lemfleet.roles.llama_cpp import _prune_script
from lemfleet.roles.model_delivery import prune_script
from lemfleet.roles.transaction import ADOPTED, Layout, adopt_script, restore_script, snapshot_script


def sh(script: str) -> None:
    subprocess.run(["bash", "-c", script], check=True)


def make_builds(root: Path, names: list[str]) -> Path:
    """Build directories, oldest first (distinct mtimes), each with a binary."""
    builds = root / "llama.cpp"
    for age, name in enumerate(reversed(names)):
        (builds / name / "bin").mkdir(parents=True)
        (builds / name / "bin" / "llama-server").write_text(name)
        stamp = 1_700_000_000 - age * 100
        os.utime(builds / name, (stamp, stamp))
    return builds


def link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def left(builds: Path) -> set[str]:
    return {p.name for p in builds.iterdir()}


@pytest.mark.parametrize("keep", [1, 2])
def test_build_prune_after_a_switch_keeps_current_previous_and_their_links(tmp_path: Path, keep: int) -> None:
    builds = make_builds(tmp_path, ["b1", "b2", "b3", "b4"])  # b4 newest
    link(builds / "current", builds / "b4")
    link(builds / "previous", builds / "b3")
    sh(_prune_script(keep, builds=str(builds), last_good_build=str(tmp_path / "good" / "build")))
    assert left(builds) == {"b4", "b3", "current", "previous"}
    assert (builds / "current" / "bin" / "llama-server").read_text() == "b4"
    assert (builds / "previous" / "bin" / "llama-server").read_text() == "b3"


def test_build_prune_never_removes_the_last_good_build_even_when_old(tmp_path: Path) -> None:
    builds = make_builds(tmp_path, ["good", "b2", "b3", "b4", "b5"])
    link(builds / "current", builds / "b5")
    link(builds / "previous", builds / "b4")
    link(tmp_path / "last-good" / "build", builds / "good")
    sh(_prune_script(2, builds=str(builds), last_good_build=str(tmp_path / "last-good" / "build")))
    assert left(builds) == {"good", "b4", "b5", "current", "previous"}


def test_build_prune_fills_keep_with_the_newest_unprotected(tmp_path: Path) -> None:
    builds = make_builds(tmp_path, ["b1", "b2", "b3", "b4"])
    link(builds / "current", builds / "b4")
    (builds / "b5.new").mkdir()  # a build being installed is not a build yet
    sh(_prune_script(3, builds=str(builds), last_good_build=str(tmp_path / "none")))
    assert left(builds) == {"b4", "b3", "b2", "current", "b5.new"}


def test_build_prune_compares_resolved_paths_through_a_linked_root(tmp_path: Path) -> None:
    real = make_builds(tmp_path / "real", ["b1", "b2", "b3"])
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    link(real / "current", alias / "b1")  # an old build, reached through the linked root
    sh(_prune_script(1, builds=str(alias), last_good_build=str(tmp_path / "none")))
    assert left(real) == {"b1", "current"}


def test_build_prune_on_a_host_without_builds_does_nothing(tmp_path: Path) -> None:
    sh(_prune_script(2, builds=str(tmp_path / "absent"), last_good_build=str(tmp_path / "none")))


def make_models(model_dir: Path, names: list[str]) -> None:
    """Model files with check records, the least recently served first."""
    model_dir.mkdir(parents=True)
    for age, name in enumerate(reversed(names)):
        (model_dir / name).write_bytes(b"GGUF" + name.encode())
        record = model_dir / f"{name}.verified"
        record.write_text("sha size mtime\n")
        stamp = 1_700_000_000 - age * 100
        os.utime(record, (stamp, stamp))


@pytest.mark.parametrize(("keep", "kept"), [(1, {"c.gguf", "a.gguf"}), (2, {"c.gguf", "b.gguf", "a.gguf"})])
def test_model_prune_keeps_serving_recent_and_last_good(tmp_path: Path, keep: int, kept: set[str]) -> None:
    models = tmp_path / "models"
    make_models(models, ["a.gguf", "x.gguf", "b.gguf", "c.gguf"])
    link(tmp_path / "last-good" / "model", models / "a.gguf")
    sh(prune_script(str(models), str(models / "c.gguf"), keep, str(tmp_path / "last-good" / "model")))
    assert {p.name for p in models.glob("*.gguf")} == kept
    assert {p.name for p in models.glob("*.verified")} == {f"{name}.verified" for name in kept}


def test_model_prune_without_a_last_good_state(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_models(models, ["a.gguf", "b.gguf", "c.gguf"])
    sh(prune_script(str(models), str(models / "a.gguf"), 2, str(tmp_path / "none")))
    assert {p.name for p in models.glob("*.gguf")} == {"a.gguf", "c.gguf"}


# -- the last good state


def host_layout(root: Path) -> Layout:
    etc = root / "etc"
    etc.mkdir()
    return Layout(
        unit=str(etc / "lemfleet-llama.service"),
        env=str(etc / "lemfleet-llama.env"),
        last_good=str(root / "last-good"),
        current=str(root / "llama.cpp" / "current"),
        api_key=str(etc / "api-key"),
        record=str(etc / "deployed.json"),
    )


def serve(layout: Layout, build: Path, model: str, unit: str, record: str, key: str | None = None) -> None:
    build.mkdir(parents=True, exist_ok=True)
    Path(layout.unit).write_text(unit)
    Path(layout.env).write_text(f"LEMFLEET_PORT=8080\nLEMFLEET_MODEL={model}\n")
    Path(layout.record).write_text(record)
    if key is None:
        Path(layout.api_key).unlink(missing_ok=True)
    else:
        Path(layout.api_key).write_text(key)
        os.chmod(layout.api_key, 0o640)
    current = Path(layout.current)
    current.unlink(missing_ok=True)
    current.symlink_to(build)


def test_a_host_of_an_earlier_lemfleet_is_adopted_and_restored_exactly(tmp_path: Path) -> None:
    layout = host_layout(tmp_path)
    old_build = tmp_path / "llama.cpp" / "old"
    serve(layout, old_build, "/m/old.gguf", "unit v1\n", '{"record_version": 1}\n')
    sh(adopt_script(layout))
    good = Path(layout.last_good)
    assert os.readlink(good / "build") == str(old_build)
    assert os.readlink(good / "model") == "/m/old.gguf"
    assert (good / "digest").read_text() == f"{ADOPTED}\n"
    assert (good / "deployed.json").read_text() == '{"record_version": 1}\n'
    assert not (good / "api-key").exists()
    assert oct(good.stat().st_mode)[-3:] == "700"

    # The deploy then changes everything, a key included, and the gate fails.
    serve(layout, tmp_path / "llama.cpp" / "new", "/m/new.gguf", "unit v2\n", '{"schema_version": 2}\n', key="k" * 16)
    sh(restore_script(layout))
    assert os.readlink(layout.current) == str(old_build)
    assert Path(layout.unit).read_text() == "unit v1\n"
    assert "LEMFLEET_MODEL=/m/old.gguf" in Path(layout.env).read_text()
    assert Path(layout.record).read_text() == '{"record_version": 1}\n'
    assert not Path(layout.api_key).exists()
    assert not list(Path(layout.current).parent.glob("*.new")) and not list(Path(layout.unit).parent.glob("*-new"))


def test_adoption_reads_a_double_quoted_model_path(tmp_path: Path) -> None:
    layout = host_layout(tmp_path)
    serve(layout, tmp_path / "llama.cpp" / "b1", "/m/a.gguf", "unit\n", '{"record_version": 1}\n')
    Path(layout.env).write_text('LEMFLEET_PORT="8080"\nLEMFLEET_MODEL="/m/quoted.gguf"\n')
    sh(adopt_script(layout))
    assert os.readlink(Path(layout.last_good) / "model") == "/m/quoted.gguf"


def test_adoption_leaves_a_kept_state_and_a_bare_host_alone(tmp_path: Path) -> None:
    layout = host_layout(tmp_path)
    sh(adopt_script(layout))  # nothing serves: no record, no build link
    assert not Path(layout.last_good).exists()
    serve(layout, tmp_path / "llama.cpp" / "b1", "/m/a.gguf", "unit\n", "{}\n")
    sh(snapshot_script(layout, str(tmp_path / "llama.cpp" / "b1"), "/m/a.gguf", "d1"))
    serve(layout, tmp_path / "llama.cpp" / "b2", "/m/b.gguf", "unit 2\n", "{}\n")
    sh(adopt_script(layout))
    assert (Path(layout.last_good) / "digest").read_text() == "d1\n"
    assert Path(layout.last_good, "unit").read_text() == "unit\n"


def test_a_kept_key_comes_back_with_its_mode(tmp_path: Path) -> None:
    layout = host_layout(tmp_path)
    build = tmp_path / "llama.cpp" / "b1"
    serve(layout, build, "/m/a.gguf", "unit\n", "{}\n", key="secret-key-0123456789\n")
    sh(snapshot_script(layout, str(build), "/m/a.gguf", "d1"))
    serve(layout, build, "/m/a.gguf", "unit\n", "{}\n", key="another-key-0123456789\n")
    os.chmod(layout.api_key, 0o644)
    sh(restore_script(layout))
    assert Path(layout.api_key).read_text() == "secret-key-0123456789\n"
    assert oct(Path(layout.api_key).stat().st_mode)[-3:] == "640"


def test_restore_without_a_last_good_state_fails_and_changes_nothing(tmp_path: Path) -> None:
    layout = host_layout(tmp_path)
    serve(layout, tmp_path / "llama.cpp" / "b1", "/m/a.gguf", "unit\n", "{}\n")
    proc = subprocess.run(["bash", "-c", restore_script(layout)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "no last good state" in proc.stderr
    assert Path(layout.unit).read_text() == "unit\n"


def test_a_new_snapshot_replaces_the_old_whole(tmp_path: Path) -> None:
    layout = host_layout(tmp_path)
    serve(layout, tmp_path / "llama.cpp" / "b1", "/m/a.gguf", "unit\n", "{}\n", key="secret-key-0123456789\n")
    sh(snapshot_script(layout, str(tmp_path / "llama.cpp" / "b1"), "/m/a.gguf", "d1"))
    serve(layout, tmp_path / "llama.cpp" / "b2", "/m/b.gguf", "unit 2\n", "{}\n")
    sh(snapshot_script(layout, str(tmp_path / "llama.cpp" / "b2"), "/m/b.gguf", "d2"))
    good = Path(layout.last_good)
    assert sorted(p.name for p in good.iterdir()) == ["build", "deployed.json", "digest", "env", "model", "unit"]
    assert os.readlink(good / "model") == "/m/b.gguf"
    assert not Path(f"{layout.last_good}.old").exists() and not Path(f"{layout.last_good}.new").exists()


def test_model_prune_counts_the_previous_model_among_the_most_recent(tmp_path: Path) -> None:
    """keep=2 after a switch q4 -> q8 (q5 served before q4): q8 serves, q4 is the previous state's; q5 goes."""
    models = tmp_path / "models"
    make_models(models, ["q5.gguf", "q4.gguf", "q8.gguf"])
    link(tmp_path / "last-good" / "model", models / "q8.gguf")
    link(tmp_path / "previous" / "model", models / "q4.gguf")
    sh(prune_script(str(models), str(models / "q8.gguf"), 2, str(tmp_path / "last-good" / "model"),
                    str(tmp_path / "previous" / "model")))  # fmt: skip
    assert {p.name for p in models.glob("*.gguf")} == {"q4.gguf", "q8.gguf"}
