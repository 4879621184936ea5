"""End to end: after the daily run, the demo's two `airflow dags test pctr_hourly` runs refresh the live ranker."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from core.io import read_json
from jobs.pipeline import HOURLY_STAGES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def summary(demo_home: Path) -> dict:
    return read_json(demo_home / "demo" / "summary.json")


def test_two_hourly_runs_close_the_first_hours_after_the_day_with_every_task_ok(summary: dict) -> None:
    next_day = "2026-11-07"
    assert summary["ds"] == "2026-11-06"
    assert [run["hour"] for run in summary["hourly"]] == [f"{next_day}T00", f"{next_day}T01"]
    for run in summary["hourly"]:
        assert {name: s["status"] for name, s in run["stages"].items()} == {s.name: "ok" for s in HOURLY_STAGES}
        assert run["seconds"] > 0 and run["holdout_rows"] > 0
        assert run["promotion"].startswith(("promoted", "refused by the gate", "registered only"))
        assert run["gate_passed"] is run["promotion"].startswith("promoted")


def test_each_run_joins_its_hour_and_trains_on_the_hours_before_from_the_daily_partitions(
    demo_home: Path, summary: dict, demo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.layout import Layout, ranker_dir

    for key, value in {"PCTR_HOME": str(demo_home), **demo_env}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config()
    layout = Layout(cfg.home)
    first, second = (run["hour"] for run in summary["hourly"])
    for hour in (first, second):
        joined = read_json(layout.joined(hour) / "_stats.json")
        assert joined["reconciled"] is True and joined["ds"] == hour and joined["output_rows"] > 0
    sources = read_json(layout.training_set(second) / "_stats.json")["sources"]
    # 6 holdout hours ending at the run's hour, 6 calibration hours before them, 6 training hours before those
    assert list(sources["holdout"]) == [f"2026-11-06T{h}" for h in range(20, 24)] + [first, second]
    assert sources["holdout"][first] == first and sources["holdout"]["2026-11-06T23"] == "2026-11-06"
    assert list(sources["calibration"]) == [f"2026-11-06T{h:02d}" for h in range(14, 20)]
    assert list(sources["train"]) == [f"2026-11-06T{h:02d}" for h in range(8, 14)]
    assert read_json(ranker_dir(cfg, second) / "calibration" / "_stats.json")["method"] == "platt"
    trained = read_json(ranker_dir(cfg, second) / "_stats.json")
    assert trained["daily_ds"] == summary["ds"] and trained["daily_version"] == summary["model_version"]
    assert trained["setting"]["learning_rate"] == cfg.hourly.learning_rate and trained["search"] is None
    # it started from what was live when it ran: the daily model, or the first hour's refresh if that went live
    first_run = summary["hourly"][0]
    expected_start = first_run["model_version"] if first_run["promoted"] else summary["model_version"]
    assert trained["warm_start_version"] == expected_start
    # the warm start kept the daily model's statistics (the input signature's buckets and scales)
    daily_stats = (ranker_dir(cfg, summary["ds"]) / "feature_stats.json").read_text()
    assert (ranker_dir(cfg, second) / "feature_stats.json").read_text() == daily_stats


def test_each_run_is_registered_as_hourly_from_its_daily_version_and_published(demo_home: Path, summary: dict) -> None:
    from core.bundle import current_version, verify
    from core.layout import Layout
    from core.tracking import mlflow_client

    cfg = load_config(home=demo_home)
    client = mlflow_client(cfg)
    layout = Layout(cfg.home)
    for run in summary["hourly"]:
        version = client.get_model_version(cfg.model_name, run["model_version"])
        assert version.tags["cadence"] == "hourly" and version.tags["ds"] == run["hour"]
        assert version.tags["daily_version"] == summary["model_version"]
        mlflow_run = client.get_run(version.run_id)
        assert mlflow_run.info.run_name == f"hourly-{run['hour']}"
        assert mlflow_run.data.tags["cadence"] == "hourly"
        assert {"auc", "logloss", "normalized_entropy", "ece", "oe_ratio"} <= set(mlflow_run.data.metrics)
        manifest = verify(layout.bundles / f"{run['hour']}-v{run['model_version']}")
        assert manifest["model_version"] == run["model_version"]
    daily = client.get_model_version(cfg.model_name, summary["model_version"])
    assert daily.tags["cadence"] == "daily"
    live = [run for run in summary["hourly"] if run["promoted"]]
    expected = f"{live[-1]['hour']}-v{live[-1]['model_version']}" if live else None
    assert current_version(layout) == (expected or f"{summary['ds']}-v{summary['model_version']}")
