"""The notebook helpers and the rich display of every API result type, with no host."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from IPython.lib.pretty import pretty

from lemfleet import api
from lemfleet.api.load import FleetLoad, HostLoad
from lemfleet.api.notebook import Progress, compare, in_notebook, plan_from_rows, plan_summary, tokens_chart
from lemfleet.api.results import HostDeploy, smoke_from_json
from lemfleet.api.rollout import RolloutResult
from lemfleet.api.rollout_record import Batch, HostOutcome, RolloutRecord
from lemfleet.plan_fleet import plan_row
from lemfleet.roles.settings_check import validate
from lemfleet.smoke_load import LoadResult
from tests.fixtures.gpu.hosts import UBUNTU_2404, scenario_host

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def smoke() -> api.FleetSmoke:
    recorded = json.loads((ROOT / "tests/unit/fixtures/llama-server/smoke-results.json").read_text())["results"]
    return api.FleetSmoke(tuple(smoke_from_json(r) for r in recorded))


def host_deploy(name: str = "<gpu-1>") -> HostDeploy:
    return HostDeploy.from_json(
        {
            "host": name,
            "ok": True,
            "operations": [
                {"name": "Unit lemfleet-llama.service", "changed": True, "success": True, "stderr": []},
                {"name": "Health gate", "changed": False, "success": None, "stderr": ["<b>"]},
            ],
            "errors": [],
            "warnings": ["VRAM unknown"],
            "smoke": None,
        }
    )


def rollout_result(changes: list[str], host: str = "tb1") -> RolloutResult:
    outcome = HostOutcome(host, "updated" if changes else "unchanged", changes=changes, serving_gap_s=0.0)
    record = RolloutRecord("r1", "inv.py", [], "1", "0", [], 0.0, status="completed")
    record.batches = [Batch(1, [host], "passed", results=[outcome])]
    return RolloutResult(record, None, {})


def test_every_api_result_type_has_an_html_view_and_a_text_table() -> None:
    plans = plan_from_rows([plan_row("<mi300x>", scenario_host("mi300x", UBUNTU_2404), validate({}))])
    load = FleetLoad((HostLoad("<gpu-1>", LoadResult("http://x", 4, correct=4, latency_s={"p50": 0.1})),))
    verify = api.FleetVerify((api.CheckResult("<gpu-1>", "test_unit_active", False, "inactive <x>"),))
    results: list[Any] = [
        plans,
        plans.hosts[0],
        api.FleetDeploy((host_deploy(),), dry=False, seconds=1.0),
        host_deploy(),
        host_deploy().operations[1],
        api.FleetSmoke((replace(smoke().results[0], host="<gpu-1>"),)),
        verify,
        verify.checks[0],
        load,
        rollout_result(["Unit"], host="<gpu-1>"),
        api.Event("operation_done", time.time(), host="<gpu-1>", operation="Unit", changed=True),
        compare({"defaults": plans}, {"<mi300x>": "recorded"}),
    ]
    for result in results:
        page = result._repr_html_()
        assert not any(raw in page for raw in ("<gpu-1>", "<mi300x>", "<b>")), type(result)  # escaped
        assert any(f"&lt;{raw}&gt;" in page for raw in ("gpu-1", "mi300x", "b")), type(result)
        text = pretty(result)  # what a notebook shows where HTML is not rendered
        assert not text.startswith(type(result).__name__ + "("), f"{type(result).__name__} prints its repr"
        assert text == str(result)
    assert "pass" in str(load) and "0.1" in str(load)
    assert str(host_deploy()).splitlines()[0] == "<gpu-1>: updated, 1 change(s); VRAM unknown"
    assert str(results[-2]) == "[<gpu-1>] operation_done: Unit (changed)"


def test_a_rollout_counts_its_changes() -> None:
    assert rollout_result([]).changes == 0
    assert "completed, 0 change(s)" in rollout_result([])._repr_html_()
    changed = rollout_result(["Unit", "Service environment"])
    assert changed.changes == 2 and str(changed).startswith("rollout r1: completed, 2 change(s)")


def test_progress_prints_plain_lines_outside_a_notebook() -> None:
    assert not in_notebook()
    out = io.StringIO()
    progress = Progress(out=out)
    assert progress.bars is False
    now = time.time()
    for event in [
        api.Event("rollout_started", now, message="r1: 2 batch(es)"),
        api.Event("host_connected", now, host="tb1"),
        api.Event("operation_started", now, host="tb1", operation="Unit"),
        api.Event("operation_done", now, host="tb1", operation="Unit", changed=True),
        api.Event("operation_done", now, host="tb1", operation="Record", changed=False),
        api.Event("operation_failed", now, host="tb1", operation="Gate", changed=False),
        api.Event("host_message", now, host="tb1", level="warning", message="slow"),
        api.Event("result", now),
    ]:
        progress(event)
    assert out.getvalue().splitlines() == [
        "r1: 2 batch(es)",
        "[tb1] host_connected: connected",
        "[tb1] Unit: changed",
        "[tb1] Record: ok",
        "[tb1] Gate: failed",
        "[tb1] warning: slow",
        "[tb1] 3 operation(s), 1 changed",
    ]
    assert (progress.done["tb1"], progress.changed["tb1"], progress.failed["tb1"]) == (3, 1, 1)


def test_progress_draws_a_tqdm_bar_per_host_when_asked() -> None:
    out = io.StringIO()
    progress = Progress(bars=True, out=out)
    now = time.time()
    for host in ("tb1", "tb2"):
        progress(api.Event("host_connected", now, host=host))
        progress(api.Event("operation_done", now, host=host, operation="Unit", changed=host == "tb1"))
    bars = dict(progress._bars)
    assert sorted(bars) == ["tb1", "tb2"] and bars["tb1"].n == 1
    assert bars["tb1"].postfix == "changed=1, failed=0"
    progress(api.Event("result", now))
    assert progress._bars == {}
    assert out.getvalue().splitlines() == ["[tb1] 1 operation(s), 1 changed", "[tb2] 1 operation(s), 0 changed"]


def test_the_chart_is_a_png_with_a_bar_per_host(tmp_path: Path) -> None:
    results = smoke()
    chart = tokens_chart(results)
    assert chart.png.startswith(PNG_MAGIC) and len(chart.png) > 5000
    assert chart._repr_png_() == chart.png and repr(chart) == "Chart(title='Decode tokens/s per host')"
    assert chart.save(tmp_path / "c" / "tokens.png").read_bytes() == chart.png
    # Width grows with the hosts, from the PNG header (big-endian width at byte 16).
    wide = tokens_chart(list(results.results) * 4)
    assert int.from_bytes(wide.png[16:20], "big") > int.from_bytes(chart.png[16:20], "big")
    with pytest.raises(ValueError, match="smoke the fleet first"):
        tokens_chart([])


def test_plans_side_by_side_mark_errors_and_auto_budgets() -> None:
    facts = scenario_host("rx6700xt", UBUNTU_2404)
    auto = plan_from_rows([plan_row("rx6700xt", facts, validate({"model_quant": "auto"}))])
    hip = plan_from_rows([plan_row("rx6700xt", facts, validate({"gpu_backend": "hip"}))])
    assert plan_summary(auto.hosts[0]) == "vulkan · 1 GPU(s) · auto (budget 12.0 GiB) · -ngl 999"
    assert plan_summary(hip.hosts[0]).startswith("error: ")
    table = compare({"auto": auto, "hip": hip}, {"rx6700xt": "recorded"})
    assert str(table).splitlines()[0].split() == ["HOST", "FACTS", "AUTO", "HIP"]
    assert json.loads(json.dumps(table.to_json()))["variants"]["hip"]["ok"] is False
    with pytest.raises(ValueError, match="nothing to compare"):
        compare({})
