from __future__ import annotations

import importlib

from jobs.pipeline import DAILY_STAGES


def test_stages_are_in_dependency_order_and_each_has_a_run_function() -> None:
    seen: set[str] = set()
    for stage in DAILY_STAGES:
        assert set(stage.after) <= seen, f"{stage.name} runs before its inputs {stage.after}"
        module = importlib.import_module(stage.module)
        assert callable(module.run)
        assert callable(getattr(module, "poke", None)) == stage.sensor, f"{stage.name}: poke() if and only if a sensor"
        seen.add(stage.name)


def test_the_daily_run_first_waits_for_its_logs() -> None:
    assert DAILY_STAGES[0].name == "wait_for_logs" and DAILY_STAGES[0].sensor
    assert [s.name for s in DAILY_STAGES if s.sensor] == ["wait_for_logs"]
    assert DAILY_STAGES[1].name == "validate_raw" and DAILY_STAGES[1].after == ("wait_for_logs",)


def test_every_stage_module_is_named_as_its_task() -> None:
    for stage in DAILY_STAGES:
        expected = "jobs.validate" if stage.name.startswith("validate_") else f"jobs.{stage.name}"
        assert stage.module == expected, stage
