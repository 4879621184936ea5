from __future__ import annotations

from pathlib import Path

import pytest

from entrypoints.cli import build_parser, main
from jobs.pipeline import DAILY_STAGES, MONITOR_STAGES


def test_every_stage_has_a_cli_command() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    expected = {s.command for s in DAILY_STAGES if not s.name.startswith("validate_")}
    assert expected | {"validate", "simulate", "run-day", "serve", "skew-report", "benchmark-dataset"} <= commands
    assert {s.command for s in MONITOR_STAGES} == {"monitor"} <= commands


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


def test_a_day_whose_logs_are_not_complete_is_refused_naming_the_first_missing_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The join checks its hours before it starts Spark."""
    from core.config import load_config
    from simulator import logs

    monkeypatch.setenv("PCTR_HOME", str(tmp_path))
    logs.run(load_config(), "2026-03-02", 2, scale="tiny", until_hour=4)
    for command in ("wait-for-logs", "join-logs"):
        assert main([command, "--ds", "2026-03-02"]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [
            f"pctr {command}: IncompleteLogsError: ds=2026-03-02 cannot be closed yet: "
            "clicks dt=2026-03-03/hour=05 not complete"
        ]


def test_the_monitor_takes_an_hour_and_says_why_it_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCTR_HOME", str(tmp_path))
    assert main(["monitor", "--hour", "2026-11-07T05", "--json"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"pctr monitor: FileNotFoundError: no live bundle ({tmp_path / 'serving' / 'CURRENT'} is missing): "
        "nothing to monitor yet"
    ]
    with pytest.raises(SystemExit):
        main(["monitor", "--hour", "2026-11-07"])
    assert "hour must be YYYY-MM-DDTHH, got '2026-11-07'" in capsys.readouterr().err


def test_a_drift_needs_its_day_and_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PCTR_HOME", str(tmp_path))
    assert main(["simulate", "--start", "2026-11-01", "--scale", "tiny", "--drift", "traffic"]) == 1
    assert "--drift-from and --drift go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--start", "2026-11-01", "--drift-from", "2026-11-02", "--drift", "weather"])
    assert not (tmp_path / "data").exists()
