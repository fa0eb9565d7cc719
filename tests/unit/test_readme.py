"""The README documents every setting, exactly as the code defines it."""

from __future__ import annotations

from pathlib import Path

from lemfleet.roles.settings_check import all_settings
from lemfleet.settings_doc import block, readme_block

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_table_with_its_default():
    assert readme_block(README) == block(), (
        "README's settings table is stale; run: python -m lemfleet.settings_doc --write README.md"
    )
    for setting in all_settings():
        assert f"| `{setting.name}` |" in README


def test_settings_carry_their_role_prefix_and_a_doc():
    prefixes = ("apt_", "gpu_", "drivers_", "llama_cpp_", "model_", "server_", "smoke_")
    names = [s.name for s in all_settings()]
    assert len(names) == len(set(names)), "a setting is declared twice"
    for setting in all_settings():
        assert setting.name.startswith(prefixes), setting.name
        assert len(setting.doc) > 10, setting.name


def test_quick_start_commands_exist():
    assert "./scripts/demo.sh" in README and "./scripts/test.sh" in README
    root = Path(__file__).resolve().parents[2]
    for script in ("scripts/demo.sh", "scripts/test.sh", "scripts/setup.sh", ".ci/run"):
        assert (root / script).stat().st_mode & 0o111, script
