from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from jobs.cli import build_parser, main
from jobs.config import load_config
from jobs.evaluate import gate
from jobs.pipeline import DAILY_STAGES, run_day


def test_stages_are_in_dependency_order_and_each_has_a_run_function() -> None:
    seen: set[str] = set()
    for stage in DAILY_STAGES:
        assert set(stage.after) <= seen, f"{stage.name} runs before its inputs {stage.after}"
        assert callable(importlib.import_module(stage.module).run)
        seen.add(stage.name)


def test_every_stage_has_a_cli_command() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    expected = {s.command for s in DAILY_STAGES if not s.name.startswith("validate_")}
    assert expected | {"validate", "simulate", "run-day", "serve", "skew-report", "benchmark-dataset"} <= commands


def test_unknown_stage_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        run_day(load_config(home=tmp_path), "2026-11-01", until="no_such_stage")


def test_missing_input_is_one_clear_line_and_a_nonzero_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCTR_HOME", str(tmp_path))
    assert main(["build-features", "--ds", "2026-11-01"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "pctr build-features: FileNotFoundError: joined logs of ds=2026-11-01 are missing: "
        "run `pctr join-logs --ds 2026-11-01` first"
    ]


def test_gate_promotes_only_a_calibrated_candidate_not_worse_than_the_champion(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    good = {"auc": 0.74, "ece": 0.003}
    assert gate(cfg, good, None) == (True, "no champion yet")
    assert gate(cfg, {**good, "ece": 0.5}, None)[0] is False
    assert gate(cfg, good, {"version": "3", "auc": 0.741})[0] is True
    promote, reason = gate(cfg, good, {"version": "3", "auc": 0.76})
    assert promote is False and "below champion 3" in reason
