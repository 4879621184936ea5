from __future__ import annotations

import importlib

from jobs.pipeline import DAILY_STAGES


def test_stages_are_in_dependency_order_and_each_has_a_run_function() -> None:
    seen: set[str] = set()
    for stage in DAILY_STAGES:
        assert set(stage.after) <= seen, f"{stage.name} runs before its inputs {stage.after}"
        assert callable(importlib.import_module(stage.module).run)
        seen.add(stage.name)


def test_every_stage_module_is_named_as_its_task() -> None:
    for stage in DAILY_STAGES:
        expected = "jobs.validate" if stage.name.startswith("validate_") else f"jobs.{stage.name}"
        assert stage.module == expected, stage
