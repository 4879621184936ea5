"""Backfills as users run them, with `make ui`'s Airflow (a real scheduler).

The demo ran its history days with ``pctr run-day`` (up to the features) and closed the last day with
``airflow dags test``. Unpaused from two days before it, the scheduler runs those two days on its
schedule (the closed day already has its run: one run per logical date) and waits for the day after,
whose logs are incomplete. ``pctr backfill`` (``airflow backfill create``) then runs the three days
again. Every run of a day writes the same partitions, training set, weights, metrics and model version.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.config import PctrConfig, load_config
from core.io import read_json, sha256_file
from core.layout import RANKER_WEIGHTS, Layout, ds_range, evaluation_dir, ranker_dir, shift_ds
from entrypoints import cli
from entrypoints.airflow_local import airflow
from tests.e2e.airflow_runs import airflow_ui, dag_runs, task_state, wait, wait_for_runs

pytestmark = pytest.mark.e2e

DAYS = 3
# what a day's run writes besides data partitions (the history's `pctr run-day --until build_features` has none)
MODEL_OUTPUTS = ("training_set", "weights", "metrics", "model_version")


def day_outputs(
    cfg: PctrConfig,
    ds: str,
    partition_digests: Callable[[Path, str], dict[str, str]],
    parquet_digest: Callable[[Path], str],
) -> dict[str, str]:
    """What the runs of ds wrote: each data partition's digest, the training set's, the ranker's weights,
    its holdout metrics and the registered model version (digests: the fixtures of tests/e2e/conftest.py)."""
    layout = Layout(cfg.home)
    outputs = partition_digests(cfg.home, ds)
    if layout.training_set(ds).exists():
        outputs["training_set"] = parquet_digest(layout.training_set(ds))
        outputs["weights"] = sha256_file(ranker_dir(cfg, ds) / RANKER_WEIGHTS)
        metrics = read_json(evaluation_dir(cfg, ds) / "_stats.json")["metrics"]
        outputs["metrics"] = str({k: metrics[k] for k in ("auc", "logloss", "normalized_entropy", "ece")})
        outputs["model_version"] = read_json(layout.stage_output("register", ds) / "_stats.json")["model_version"]
    return outputs


def test_a_backfill_writes_what_the_scheduled_runs_wrote(
    copied_home: Path,
    demo_env: dict[str, str],
    partition_digests: Callable[[Path, str], dict[str, str]],
    parquet_digest: Callable[[Path], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    summary = read_json(copied_home / "demo" / "summary.json")
    days = ds_range(shift_ds(summary["ds"], 1 - DAYS), DAYS)
    env = {
        "PCTR_HOME": str(copied_home),
        **demo_env,
        # the schedule starts at the first of the days; a failed task fails its run at once
        "PCTR_ORCHESTRATION__START_DATE": days[0],
        "PCTR_ORCHESTRATION__RETRIES": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config()
    layout = Layout(cfg.home)
    before = {ds: day_outputs(cfg, ds, partition_digests, parquet_digest) for ds in days}
    live = (layout.current_pointer.read_text(), summary["champion"])

    with airflow_ui(cfg) as ui:
        assert cli.main(["backfill", days[0], days[-1]]) == 1
        assert "pctr_daily is paused: Airflow runs no backfill of a paused DAG" in capsys.readouterr().err
        airflow(cfg, "dags", "unpause", "pctr_daily")  # catchup: one scheduled run per day from days[0]
        wait_for_runs(cfg, days[:-1], "scheduled", ui)
        scheduled = {ds: day_outputs(cfg, ds, partition_digests, parquet_digest) for ds in days}
        for ds in days[:-1]:  # the history: `pctr run-day` up to the features
            assert {k: v for k, v in scheduled[ds].items() if k not in MODEL_OUTPUTS} == before[ds], ds
        assert before[days[-1]] == scheduled[days[-1]]  # the closed day: `airflow dags test`
        # the next day's run waits for its logs (its hours after 05 are not written), as it would live
        waiting = shift_ds(days[-1], 1)
        wait(lambda: task_state(cfg, waiting, "wait_for_logs") == "up_for_reschedule", 120, "the next day's sensor")
        assert (waiting, "scheduled", "running") in dag_runs(cfg)
        assert cli.main(["backfill", days[0], days[-1]]) == 0
        wait_for_runs(cfg, days, "backfill", ui)
        backfilled = {ds: day_outputs(cfg, ds, partition_digests, parquet_digest) for ds in days}

    assert backfilled == scheduled
    # the same weights are the same registered version: nothing new went live
    assert (
        layout.current_pointer.read_text(),
        read_json(layout.stage_output("register", days[-1]) / "_stats.json")["champion_version"],
    ) == live
