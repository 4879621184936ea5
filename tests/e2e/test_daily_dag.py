"""End to end: tiny simulated days -> `airflow dags test pctr_daily` -> service -> ranked ads (the demo path)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from core.config import load_config
from core.io import read_json
from jobs.pipeline import DAILY_STAGES

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MIB = 2**20


def _descendants() -> set[psutil.Process]:
    return set(psutil.Process().children(recursive=True))


def _task_failed_at(airflow_log: Path) -> float:
    """When the supervisor reported the first failed task process (epoch seconds)."""
    for line in airflow_log.read_text().splitlines():
        if "Workload finished" in line and "final_state=failed" in line:
            return dt.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
    raise AssertionError(f"no failed task in {airflow_log}")


def _command_line(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _running(processes: set[psutil.Process]) -> set[psutil.Process]:
    alive = set()
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.add(proc)
    return alive


def test_every_stage_of_the_daily_dag_succeeds(demo_home: Path) -> None:
    summary = read_json(demo_home / "demo" / "summary.json")
    assert {name: s["status"] for name, s in summary["stages"].items()} == {s.name: "ok" for s in DAILY_STAGES}
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in summary["stages"].values())
    for key in ("auc", "logloss", "normalized_entropy", "ece", "oe_ratio", "oracle_auc", "baseline_auc"):
        assert summary["metrics"][key] is not None, key
    assert 0.0 < summary["metrics"]["auc"] <= 1.0
    assert summary["metrics"]["oracle_auc"] > 0.6
    # every demo day's joined rows (3 warm-up, 2 training days, validation, the closed day), for comparing runs
    assert max(summary["join_checksums"]) == summary["ds"] and len(summary["join_checksums"]) == 7


def test_the_day_after_the_closed_one_is_simulated_to_the_end_of_its_attribution_window(demo_home: Path) -> None:
    from core.layout import Layout, shift_ds
    from simulator.logs import written_through

    summary = read_json(demo_home / "demo" / "summary.json")
    assert written_through(Layout(demo_home), summary["ds"]) == 23
    # to the end of the attribution window of the second hourly run's hour: 8 hours, no more
    assert written_through(Layout(demo_home), shift_ds(summary["ds"], 1)) == 7


def test_the_model_is_registered_as_champion_and_published(demo_home: Path) -> None:
    import mlflow

    from core.bundle import current_bundle_dir, verify
    from core.layout import Layout
    from core.tracking import tracking_uri

    cfg = load_config(home=demo_home)
    summary = read_json(demo_home / "demo" / "summary.json")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(cfg), registry_uri=tracking_uri(cfg))
    champion = client.get_model_version_by_alias(cfg.model_name, "champion")
    # live: the daily model, or an hourly refresh of it that passed the gate after it
    assert str(champion.version) == summary["champion"]
    assert champion.tags.get("daily_version", str(champion.version)) == summary["model_version"]
    bundle = current_bundle_dir(Layout(demo_home))
    manifest = verify(bundle)
    assert manifest["model_version"] == summary["champion"]
    assert summary["index_size"] > 0


def test_the_service_ranked_ads_for_known_and_new_users(demo_home: Path) -> None:
    summary = read_json(demo_home / "demo" / "summary.json")
    assert len(summary["ranked_users"]) == 3
    assert summary["ranked_users"][-1]["user_id"] == "u-new-demo-user"
    for user in summary["ranked_users"]:
        assert len(user["ads"]) == 3 and len(set(user["ads"])) == 3
    example = summary["rank_example"]
    assert example["model_version"]
    for ad in example["ads"]:
        assert 0.0 < ad["pctr"] < 1.0
        assert ad["price"] <= ad["bid"] + 1e-9
    assert len(summary["predict_example"]["predictions"]) == 1


def test_served_batch_features_match_the_offline_store(demo_home: Path) -> None:
    summary = read_json(demo_home / "demo" / "summary.json")
    skew = summary["skew"]
    # the demo serves the day after the one it closed, on the simulated clock
    assert skew["served_day"] == (dt.date.fromisoformat(summary["ds"]) + dt.timedelta(days=1)).isoformat()
    assert skew["rows_compared"] == 9  # three users x three slots
    assert skew["max_batch_mismatch_rate"] == 0.0


def test_the_summary_records_the_peak_memory_of_the_run_and_of_every_stage(demo_home: Path) -> None:
    summary = read_json(demo_home / "demo" / "summary.json")
    machine_mib = psutil.virtual_memory().total / MIB
    peak = summary["peak_memory_mib"]
    assert 0 < peak <= machine_mib
    assert 0 < summary["history_peak_memory_mib"] <= peak
    for stage in DAILY_STAGES:
        assert 0 < summary["stages"][stage.name]["peak_memory_mib"] <= peak, stage.name
    # horovodrun and its two TensorFlow workers are part of the train stage's tree
    assert summary["stages"]["train"]["peak_memory_mib"] > summary["stages"]["validate_raw"]["peak_memory_mib"]


def test_the_terminal_shows_every_task_starting_and_ending_and_the_training_epochs(demo_run: tuple[Path, str]) -> None:
    _, printed = demo_run
    for stage in DAILY_STAGES:
        assert re.search(rf"^  {stage.name} \.\.\.$", printed, re.MULTILINE), stage.name
        assert re.search(rf"^  {stage.name} ok \([0-9.]+ s\)$", printed, re.MULTILINE), stage.name
    # the baseline's fit, then the search (the home's first run): every setting from its starting point
    # (epoch 0) through the first epoch, the better one on to the last
    assert re.search(r"^    \[train\] baseline C=[0-9.e-]+: \d+ Newton iterations", printed, re.MULTILINE)
    epochs = re.findall(r"^    \[train\] epoch (\d+)/(\d+) .*val_logloss", printed, re.MULTILINE)
    assert epochs[:2] == [("0", "1"), ("1", "1")] and ("2", "2") in epochs
    trials = re.findall(r"^    \[train\] search \{.*\} up to epoch (\d+): val_logloss", printed, re.MULTILINE)
    assert trials == ["1", "1", "2"]


def test_a_failed_task_ends_the_demo_at_once_with_its_error(
    copied_home: Path, failing_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrypoints import demo

    for key, value in {"PCTR_HOME": str(copied_home), **failing_env}.items():
        monkeypatch.setenv(key, value)
    before = _descendants()
    with pytest.raises(SystemExit) as failed:
        demo.main(["--scale", "tiny"])
    exited = time.time()

    assert failed.value.code not in (0, None)
    assert "task validate_raw failed" in str(failed.value.code)  # failed, not up_for_retry: no retries
    printed = capsys.readouterr()
    assert "  validate_raw failed (" in printed.out
    # the task's own exception, from its log, on the terminal
    assert "DataQualityError: validate raw ds=" in printed.err
    assert "bid in (0, 0.001]" in printed.err
    assert exited - _task_failed_at(copied_home / "demo" / "airflow_dags_test.log") < 60
    assert _running(_descendants() - before) == set()


def test_sigterm_stops_the_demo_and_every_process_it_started(copied_home: Path, failing_env: dict[str, str]) -> None:
    env = {**os.environ, "PCTR_HOME": str(copied_home), **failing_env, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.demo", "--scale", "tiny"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        deadline = time.time() + 180
        for line in proc.stdout:  # until the first Airflow task runs
            if line.strip() == "validate_raw ..." or time.time() > deadline:
                break
        tree = set(psutil.Process(proc.pid).children(recursive=True))
        assert any("dags test" in _command_line(p) for p in tree), "the Airflow run had not started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
        assert _running(tree) == set()
    finally:
        if proc.poll() is None:
            proc.kill()


def _online_user_values(cfg, user_ids: list[str]) -> dict:
    from feature_repo.definitions import view_refs
    from feature_repo.store import feature_store

    store = feature_store(cfg)
    return store.get_online_features(
        features=view_refs("user"), entity_rows=[{"user_id": u} for u in user_ids]
    ).to_dict()


def test_a_backfilled_older_day_is_registered_without_rewinding_what_is_live(
    copied_home: Path, demo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day before the closed one, run again from materialize on (as a backfill would): it registers a
    version, but champion, CURRENT and the online store stay on the newer day; then promote and rollback."""
    import pandas as pd

    from core.champion import champion, history, promote, rollback
    from core.layout import Layout, shift_ds
    from core.tracking import mlflow_client
    from jobs.pipeline import STAGES_BY_NAME, run_stage

    for key, value in {"PCTR_HOME": str(copied_home), **demo_env}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config()
    layout = Layout(cfg.home)
    summary = read_json(copied_home / "demo" / "summary.json")
    older = shift_ds(summary["ds"], -1)
    users = pd.read_parquet(layout.feature_files("user", summary["ds"]))["user_id"].head(20).tolist()
    online_before = _online_user_values(cfg, users)
    current_before = layout.current_pointer.read_text()

    first = DAILY_STAGES.index(STAGES_BY_NAME["materialize"])
    stats = {stage.name: run_stage(cfg, stage.name, older) for stage in DAILY_STAGES[first:]}

    assert set(stats["materialize"]["skipped_online_holds_newer"]) == {
        f"{e}_features" for e in ("user", "ad", "advertiser", "user_category")
    }
    assert _online_user_values(cfg, users) == online_before
    assert "not before the holdout" in stats["evaluate"]["champion_skipped"]
    registered = stats["register"]
    assert registered["model_version"] != summary["model_version"] and registered["promoted"] is False
    assert registered["champion_version"] == summary["champion"]
    assert layout.current_pointer.read_text() == current_before
    assert stats["publish"]["flipped"] is False
    # between searches: the setting the closed day's search recorded, the baseline fitted at its C alone
    recorded = read_json(layout.ranker_setting)
    assert stats["train"]["setting"] == {**{k: v for k, v in recorded.items() if k != "trials"}, "searched": False}
    assert [step["c"] for step in stats["train"]["baseline"]["path"]] == [recorded["baseline_c"]]
    assert stats["train"]["search"] is None

    # a retried register reuses its run and model version
    again = run_stage(cfg, "register", older)
    assert (again["run_id"], again["model_version"]) == (registered["run_id"], registered["model_version"])
    client = mlflow_client(cfg)
    # the daily version, the hourly runs' and this one
    assert len(client.search_model_versions(f"name = '{cfg.model_name}'")) == 2 + len(summary["hourly"])
    tags = client.get_run(registered["run_id"]).data.tags
    assert tags["lineage.feature_service"] == "ranker_v1"
    assert set(json.loads(tags["lineage.joined_checksums"])) == {shift_ds(older, -d) for d in (1, 2, 3)}

    promote(cfg, registered["model_version"])
    assert champion(client, cfg.model_name).version == registered["model_version"]
    assert layout.current_pointer.read_text().strip() == stats["publish"]["version"]
    history_before = history(client, cfg.model_name)
    rollback(cfg)
    assert champion(client, cfg.model_name).version == summary["champion"]
    assert layout.current_pointer.read_text() == current_before
    assert history(client, cfg.model_name) == history_before[:-1]
    while len(history(client, cfg.model_name)) > 1:
        rollback(cfg)
    assert history(client, cfg.model_name) == [summary["model_version"]]
    with pytest.raises(LookupError, match="no previous champion"):
        rollback(cfg)


def test_the_ranker_started_from_the_days_baseline_fitted_to_convergence(
    demo_home: Path, demo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.layout import ranker_dir

    for key, value in {"PCTR_HOME": str(demo_home), **demo_env}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config()
    trained = read_json(ranker_dir(cfg, read_json(demo_home / "demo" / "summary.json")["ds"]) / "_stats.json")
    baseline, ranker = trained["baseline"], trained["history"]
    assert baseline["converged"] and baseline["c"] in cfg.train.baseline_c_values
    assert baseline["val_logloss"] == min(step["val_logloss"] for step in baseline["path"])
    assert "Newton iterations" in (Path(trained["log"]).parent / "baseline.log").read_text()
    # the ranker's starting point is the baseline (float32 Keras against float64 scikit-learn), and it kept
    # that start or something better on validation
    assert ranker["initial_val_logloss"] == pytest.approx(baseline["val_logloss"], rel=1e-5)
    assert ranker["best_val_logloss"] <= ranker["initial_val_logloss"]


def test_the_first_run_searched_its_hyperparameters_and_logged_every_trial(
    demo_home: Path, demo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.layout import Layout, ranker_dir
    from core.tracking import mlflow_client

    for key, value in {"PCTR_HOME": str(demo_home), **demo_env}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config()
    summary = read_json(demo_home / "demo" / "summary.json")
    trained = read_json(ranker_dir(cfg, summary["ds"]) / "_stats.json")
    trials = trained["search"]["trials"]
    assert [(t["learning_rate"], t["embedding_weight_decay"]) for t in trials] == [(0.001, 0.03), (0.001, 0.0)]
    best = min(trials, key=lambda t: t["val_logloss"])
    assert trained["history"]["best_val_logloss"] == best["val_logloss"]
    setting = {"learning_rate": best["learning_rate"], "embedding_weight_decay": best["embedding_weight_decay"]}
    assert trained["setting"] == {
        "searched_on": summary["ds"],
        **setting,
        "baseline_c": trained["baseline"]["c"],
        "searched": True,
    }
    assert read_json(Layout(cfg.home).ranker_setting)["trials"] == trials

    client = mlflow_client(cfg)
    run = client.get_run(client.get_model_version(cfg.model_name, summary["model_version"]).run_id)
    assert run.data.tags["setting.searched"] == "True"
    assert float(run.data.params["train.learning_rate"]) == best["learning_rate"]
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == len(trials)
    chosen = [child for child in children if child.data.tags["chosen"] == "True"]
    assert len(chosen) == 1 and chosen[0].data.metrics["val_logloss"] == pytest.approx(best["val_logloss"])
    assert float(chosen[0].data.params["train.embedding_weight_decay"]) == best["embedding_weight_decay"]


def test_a_rerun_warm_started_from_the_champion_starts_from_its_weights(
    demo_home: Path, demo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last on purpose: it retrains the closed day in place (what clearing the Airflow task would do)."""
    from core.layout import CHECKPOINTS, ranker_dir
    from jobs import train

    summary = read_json(demo_home / "demo" / "summary.json")
    # the daily version (the champion may be an hourly refresh of it, whose weights moved on)
    warm_start = {"PCTR_TRAIN__WARM_START": summary["model_version"]}
    for key, value in {"PCTR_HOME": str(demo_home), **demo_env, **warm_start}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config()
    champion_run = read_json(ranker_dir(cfg, summary["ds"]) / "_stats.json")
    assert champion_run["warm_start_version"] is None

    rerun = train.run(cfg, summary["ds"])
    assert rerun["warm_start_version"] == summary["model_version"]
    # same weights (the baseline refitted to the same first-order part), same validation day: the starting
    # loss is the champion's best
    assert rerun["history"]["initial_val_logloss"] == pytest.approx(
        champion_run["history"]["best_val_logloss"], rel=1e-5
    )
    assert not (ranker_dir(cfg, summary["ds"]) / CHECKPOINTS).exists()
