"""The monitor stage on a tiny home with real engines: Feast (a materialised online store), MLflow, raw click
logs written by the simulator, a served log of the simulated traffic, and a live bundle. The second day is
drifted (traffic and clicks): the monitor passes on the first and fails on the second, after its report."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.config import PctrConfig, load_config
from core.io import read_json, write_json_atomic
from core.layout import Layout, feature_event_time, shift_ds
from core.raw_logs import SERVED_FEATURES
from jobs import monitor
from jobs.training_set import write_split
from models.features import ENTITIES, FEATURE_ENTITIES, batch_features
from simulator import logs
from simulator import world as sw
from simulator.traffic import Drift, simulate_day

pytestmark = pytest.mark.integration

TRAINED, DAY1, DAY2 = "2026-11-04", "2026-11-05", "2026-11-06"


def _feature_files(cfg: PctrConfig, ds: str) -> None:
    """One row per entity of each view, as build_features writes them (spec columns, event time of ds)."""
    layout = Layout(cfg.home)
    ts = pd.Timestamp(feature_event_time(ds, cfg.feature_delay)).as_unit("us")
    for entity in FEATURE_ENTITIES:
        columns: dict[str, Any] = {key: ["k0"] for key in ENTITIES[entity].keys}
        for f in batch_features(entity):
            columns[f.name] = ["x"] if f.dtype == "string" else np.array([1.0], dtype=f.numpy_dtype)
        layout.feature_files(entity, ds).mkdir(parents=True)
        frame = pd.DataFrame(columns).assign(event_timestamp=ts, created_timestamp=ts)
        frame.to_parquet(layout.feature_files(entity, ds) / "part-0.parquet", index=False)


def _write_served_log(layout: Layout, served: pd.DataFrame) -> None:
    directory = layout.served_log / f"dt={served['ts'].iloc[0].date().isoformat()}"
    directory.mkdir(parents=True)
    records = served.drop(columns="label").assign(ts=served["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z")
    with open(directory / "1234.jsonl", "w") as handle:
        for record in records.to_dict("records"):
            handle.write(json.dumps(record) + "\n")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, served_traffic: Callable[..., pd.DataFrame]) -> PctrConfig:
    """Live bundle trained for TRAINED (its train split: TRAINED's traffic), published on DAY1; DAY1 served as
    trained for, DAY2 drifted; features of TRAINED materialised; joined days up to DAY1."""
    from jobs import materialize

    # tiny, but enough impressions that a 1.5x lift of clicks stands out of the sampling noise of O/E
    cfg = load_config(
        home=tmp_path_factory.mktemp("home"), simulation={"scales": {"monitor": (2_000, 300, 30, 100_000)}}
    )
    layout = Layout(cfg.home)
    drift = Drift(dt.date.fromisoformat(DAY2), frozenset({"traffic", "clicks"}))
    logs.run(cfg, DAY1, 2, scale="monitor", drift=drift)  # the raw clicks that label the served impressions
    users, ads, advertisers, per_day = cfg.simulation.scales["monitor"]
    seed = cfg.simulation.seed
    world = sw.World(seed, users, ads, advertisers, cfg.simulation.new_ads_per_day_fraction, cfg.join.max_bid)
    trained = served_traffic(world, simulate_day(world, cfg, TRAINED, seed, per_day))
    train = pd.DataFrame.from_records(trained[SERVED_FEATURES].tolist()).assign(
        position=trained["position"], user_id=trained["user_id"], ad_id=trained["ad_id"], weight=1.0
    )
    write_split(train, layout.training_set(TRAINED) / "train", shuffle_seed=None)
    before_clicks_drift = Drift(drift.start, frozenset({"traffic"}))
    for ds in (DAY1, DAY2):
        # served by a model calibrated to the world before the clicks drift: its true click probabilities
        model = simulate_day(world, cfg, ds, seed, per_day, before_clicks_drift).p_click
        _write_served_log(layout, served_traffic(world, simulate_day(world, cfg, ds, seed, per_day, drift), model))

    _feature_files(cfg, TRAINED)
    materialize.run(cfg, TRAINED)
    for ds in (TRAINED, DAY1):
        write_json_atomic(layout.joined(ds) / "_stats.json", {"stage": "join_logs", "ds": ds})
    version = f"{TRAINED}-v1"
    published = dt.datetime.fromisoformat(f"{DAY1}T06:00:00+00:00").isoformat()
    write_json_atomic(
        layout.bundles / version / "manifest.json", {"version": version, "ds": TRAINED, "created_at": published}
    )
    layout.current_pointer.write_text(version + "\n")
    return cfg


def test_the_monitor_passes_on_the_traffic_it_was_trained_for(home: PctrConfig) -> None:
    import mlflow

    stats = monitor.run(home, f"{DAY1}T23")
    assert stats["breaches"] == []
    assert stats["served_impressions"] == home.simulation.scales["monitor"][3]
    assert stats["labels_known_until"] == f"{shift_ds(DAY1, 1)}T00:00:00+00:00"
    overall = stats["calibration"]["overall"]
    assert 60_000 < overall["count"] < 90_000 and 0.85 < overall["oe_ratio"] < 1.15
    assert set(stats["calibration"]["segments"]["user"]) == {"new", "returning"}
    assert max(d["psi"] for d in stats["drift"].values()) < 0.05
    ages = stats["staleness"]
    assert ages["bundle"]["age_hours"] == 18.0 and ages["joined"] == {
        "newest": DAY1, "data_end": f"{DAY2}T00:00:00+00:00", "age_hours": 0.0,
    }  # fmt: skip
    # features of TRAINED are loaded up to their event time's window end: 7 h after the end of DAY1's eve
    assert {v["age_hours"] for v in ages["feature_views"].values()} == {17.0}
    report = Layout(home.home).monitor_report(f"{DAY1}T23")
    assert read_json(report / "_stats.json") == stats
    assert {p.name for p in report.iterdir()} == {
        "_stats.json",
        "index.html",
        "psi.png",
        "reliability.png",
        "oe_by_hour.png",
    }
    run = mlflow.get_run(stats["mlflow_run_id"])
    assert run.data.tags["cadence"] == "monitor" and run.data.tags["hour"] == f"{DAY1}T23"
    assert run.data.metrics["psi.placement"] == pytest.approx(stats["drift"]["placement"]["psi"])


def test_the_monitor_fails_on_drift_after_writing_its_report(home: PctrConfig) -> None:
    hour = f"{DAY2}T23"
    with pytest.raises(monitor.MonitorThresholdError) as failure:
        monitor.run(home, hour)
    message = str(failure.value)
    for crossed in ("PSI placement", "PSI device", "O/E overall"):
        assert crossed in message
    stats = read_json(Layout(home.home).monitor_report(hour) / "_stats.json")
    assert [b for b in stats["breaches"] if b in message] == stats["breaches"]
    assert stats["calibration"]["overall"]["oe_ratio"] > 1.25
    assert "PSI placement" in (Layout(home.home).monitor_report(hour) / "index.html").read_text()
