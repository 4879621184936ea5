"""End to end: tiny simulated days -> `airflow dags test pctr_daily` -> service -> ranked ads (the demo path)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from jobs.config import load_config
from jobs.io import read_json
from jobs.pipeline import DAILY_STAGES

pytestmark = pytest.mark.e2e


# small and fast, but every engine is real: Spark, GX, Feast, horovodrun -np 2, MLflow, FAISS, Airflow
DEMO_ENV = {
    "PCTR_TRAIN__HISTORY_DAYS": "2",
    "PCTR_TRAIN__EPOCHS": "2",
    "PCTR_TRAIN__HASH_BUCKETS": "5000",
    "PCTR_TRAIN__BATCH_SIZE": "256",
    "PCTR_SERVING__PORT": "18501",
    "PCTR_JOIN__NEG_RATE": "0.3",
}


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("pctr-e2e")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"PCTR_HOME": str(home), **DEMO_ENV}.items():
            mp.setenv(key, value)
        from jobs import demo

        assert demo.main(["--scale", "tiny"]) == 0
    return home


def test_every_stage_of_the_daily_dag_succeeds(demo_home: Path) -> None:
    summary = read_json(demo_home / "demo" / "summary.json")
    assert {name: s["status"] for name, s in summary["stages"].items()} == {s.name: "ok" for s in DAILY_STAGES}
    assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in summary["stages"].values())
    for key in ("auc", "logloss", "normalized_entropy", "ece", "oe_ratio", "oracle_auc", "baseline_auc"):
        assert summary["metrics"][key] is not None, key
    assert 0.0 < summary["metrics"]["auc"] <= 1.0
    assert summary["metrics"]["oracle_auc"] > 0.6


def test_the_model_is_registered_as_champion_and_published(demo_home: Path) -> None:
    import mlflow

    from jobs.layout import Layout
    from jobs.register import tracking_uri
    from serving.bundle import current_bundle_dir, verify

    cfg = load_config(home=demo_home)
    summary = read_json(demo_home / "demo" / "summary.json")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(cfg), registry_uri=tracking_uri(cfg))
    champion = client.get_model_version_by_alias(cfg.model_name, "champion")
    assert str(champion.version) == summary["model_version"] == summary["champion"]
    bundle = current_bundle_dir(Layout(demo_home))
    manifest = verify(bundle)
    assert manifest["model_version"] == summary["model_version"]
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


def test_a_rerun_warm_started_from_the_champion_starts_from_its_weights(
    demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last on purpose: it retrains the closed day in place (what clearing the Airflow task would do)."""
    from jobs import train

    for key, value in {"PCTR_HOME": str(demo_home), **DEMO_ENV, "PCTR_TRAIN__WARM_START": "champion"}.items():
        monkeypatch.setenv(key, value)
    cfg = load_config()
    summary = read_json(demo_home / "demo" / "summary.json")
    champion_run = read_json(train.ranker_dir(cfg, summary["ds"]) / "_stats.json")
    assert champion_run["warm_start_version"] is None

    rerun = train.run(cfg, summary["ds"])
    assert rerun["warm_start_version"] == summary["champion"]
    # same weights, same validation day: the starting loss is the champion's best
    assert rerun["warm_start_val_logloss"] == pytest.approx(champion_run["history"]["best_val_logloss"], rel=1e-5)
    assert not (train.ranker_dir(cfg, summary["ds"]) / train.CHECKPOINTS).exists()
