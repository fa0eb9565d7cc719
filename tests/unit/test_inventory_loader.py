"""The one inventory loader: the controller's targets see the deploy's --data, --group-data and --limit.

Each call runs the loader's child process (pyinfra's own inventory loader); no host is contacted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lemfleet.api.fleet import Fleet, FleetSetupError, fleet_targets
from lemfleet.inventory_loader import InventoryError, inventory_targets
from lemfleet.sshtunnel import SshOptions


def _inventory(tmp_path: Path) -> Path:
    inventory = tmp_path / "fleet.py"
    inventory.write_text(
        "gpu = [('gpu-1', {'ssh_hostname': '10.0.0.7', 'ssh_port': 2222}), 'gpu-2']\n"
        "cpu = [('cpu-1', {'server_port': 9000})]\n"
    )
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "gpu.py").write_text("server_host = '0.0.0.0'\n")
    return inventory


def test_targets_take_data_group_data_and_limit_as_the_deploy_does(tmp_path: Path) -> None:
    fleet = Fleet(str(_inventory(tmp_path)), data=("server_port=8181",), group_data=(str(tmp_path / "group_data"),))
    targets = fleet_targets(fleet, ["gpu", "cpu-*"])
    assert [t.name for t in targets] == ["gpu-1", "gpu-2", "cpu-1"]
    by_name = {t.name: t for t in targets}
    assert by_name["gpu-1"].ssh == SshOptions("10.0.0.7", 2222)
    assert {t.server_port for t in targets} == {8181}  # --data wins over host data, as in pyinfra
    assert (by_name["gpu-2"].server_host, by_name["cpu-1"].server_host) == ("0.0.0.0", "127.0.0.1")
    assert by_name["gpu-2"].groups[0] == "gpu"


def test_a_limit_that_matches_nothing_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(FleetSetupError, match=r"--limit 'tpu' matches no group or host in the inventory"):
        fleet_targets(Fleet(str(_inventory(tmp_path))), "tpu")


def test_a_missing_inventory_is_named_before_any_child_starts(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"inventory file .*nowhere.py does not exist"):
        inventory_targets(str(tmp_path / "nowhere.py"))
