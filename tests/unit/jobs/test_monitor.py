"""The monitor's figures and gate: PSI and KS, served calibration by segment, thresholds, labelling from raw
click hours, and the gate on simulated traffic with and without drift (tiny scale, no engines)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.config import MonitorConfig, load_config
from core.layout import Layout
from core.raw_logs import COMPLETE_MARKER, SERVED_FEATURES
from jobs import monitor
from models.drift import OTHER, category_shares, feature_drift, ks_statistic, psi, quantile_edges, top_categories
from models.features import BY_NAME
from simulator import world as sw
from simulator.traffic import Drift, simulate_day

UTC = dt.UTC


def test_psi_by_hand_and_a_bin_empty_on_one_side_stays_finite() -> None:
    expected = 0.25 * np.log(2.0) + 0.25 * np.log(1.5)  # (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    assert psi(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == 0.0
    assert 0.0 < psi(np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.4, 0.2])) < np.inf


def test_ks_by_hand() -> None:
    assert ks_statistic(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.0, 4.0, 5.0, 6.0])) == pytest.approx(0.5)
    assert ks_statistic(np.array([1.0, 2.0]), np.array([2.0, 1.0])) == 0.0


def test_numeric_bins_come_from_the_reference_quantiles_and_ties_merge() -> None:
    reference = np.r_[np.zeros(80), np.arange(1.0, 21.0)]  # 80% zeros: one bin, not eight empty ones
    assert list(quantile_edges(reference, 10)) == [0.0, 10.0]  # bins <= 0, (0, 10], > 10
    frame = pd.DataFrame({"ad_age_days": reference})
    same = feature_drift(frame, frame, [BY_NAME["ad_age_days"]], bins=10)["ad_age_days"]
    assert same["psi"] == 0.0 and same["ks"] == 0.0
    assert same["bins"] == ["<= 0", "<= 10", "> 10"] and same["reference_shares"] == [0.8, 0.1, 0.1]


def test_a_shifted_numeric_feature_drifts_and_a_resample_does_not() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"ad_age_days": rng.normal(10.0, 2.0, 20_000)})
    resample = pd.DataFrame({"ad_age_days": rng.normal(10.0, 2.0, 5_000)})
    shifted = pd.DataFrame({"ad_age_days": rng.normal(12.0, 2.0, 5_000)})  # one standard deviation
    feature = [BY_NAME["ad_age_days"]]
    calm = feature_drift(reference, resample, feature, bins=10)["ad_age_days"]
    moved = feature_drift(reference, shifted, feature, bins=10)["ad_age_days"]
    assert calm["psi"] < 0.02 and calm["ks"] < 0.03
    assert moved["psi"] > 0.5 and 0.3 < moved["ks"] < 0.45  # KS of N(0,1) vs N(1,1): 0.383


def test_categorical_bins_are_the_top_values_and_other() -> None:
    reference = np.array(["a"] * 5 + ["b"] * 3 + ["c", "d"], dtype=object)
    assert top_categories(reference, bins=3) == ["a", "b"]
    assert list(category_shares(reference, ["a", "b"])) == [0.5, 0.3, 0.2]
    current = pd.DataFrame({"placement": ["z"] * 5 + ["a"] * 5})  # a value training never saw goes to "other"
    result = feature_drift(pd.DataFrame({"placement": reference}), current, [BY_NAME["placement"]], bins=3)
    assert result["placement"]["bins"] == ["a", "b", OTHER]
    assert result["placement"]["current_shares"] == [0.5, 0.0, 0.5] and result["placement"]["ks"] is None


def _closed(users: list[str], preds: list[float], labels: list[int], position: int = 1) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame({
        "user_id": users, "ad_id": ["a1"] * n, "position": [position] * n, "pctr_served": preds, "label": labels,
        "ts": pd.Timestamp("2026-11-07T03:00Z") + pd.to_timedelta(np.arange(n) % 2, unit="h"),
    })  # fmt: skip


def test_served_calibration_by_segment() -> None:
    # returning users: 2,000 impressions at 0.05, 100 clicks (O/E 1); new users: 500 at 0.05, 50 clicks (O/E 2)
    returning = _closed(["u1"] * 2000, [0.05] * 2000, [1] * 100 + [0] * 1900)
    new = _closed(["u9"] * 500, [0.05] * 500, [1] * 50 + [0] * 450, position=2)
    result = monitor.served_calibration(pd.concat([returning, new], ignore_index=True), {"u1"}, {"a1"})
    assert result["overall"]["count"] == 2500 and result["overall"]["clicks"] == 150
    assert result["overall"]["oe_ratio"] == pytest.approx(150 / 125)
    users = result["segments"]["user"]
    assert users["returning"]["oe_ratio"] == pytest.approx(1.0) and users["returning"]["ece"] == pytest.approx(0.0)
    assert users["new"]["oe_ratio"] == pytest.approx(2.0) and users["new"]["ece"] == pytest.approx(0.05)
    assert set(result["segments"]["ad"]) == {"established"}
    assert set(result["segments"]["position"]) == {"1", "2"}
    assert result["segments"]["position"]["2"]["oe_ratio"] == pytest.approx(2.0)  # reported, never gated
    assert [h["count"] for h in result["by_hour"]] == [1250, 1250]

    # the new users' O/E of 2 is far outside the band, but 500 impressions are too few to gate on
    breaches = monitor.threshold_breaches(MonitorConfig(), 0, {}, result, None)
    assert not any("user=new" in b for b in breaches)
    breaches = monitor.threshold_breaches(MonitorConfig(min_segment_impressions=500), 0, {}, result, None)
    assert any(b.startswith("O/E user=new 2.000 outside") for b in breaches)
    assert any(b.startswith("ECE user=new 0.05000 >") for b in breaches)
    assert not any("returning" in b or "position" in b for b in breaches)


def test_no_labelled_impression_yet_is_reported_not_failed() -> None:
    result = monitor.served_calibration(_closed([], [], []), set(), set())
    assert result == {"overall": {"count": 0}, "segments": {}, "by_hour": []}
    assert monitor.threshold_breaches(MonitorConfig(), 0, {}, result, None) == []


def _ages(bundle: float, views: list[float | None], joined: float | None) -> dict[str, Any]:
    return {
        "bundle": {"version": "2026-11-06-v3", "age_hours": bundle},
        "feature_views": {f"view{i}": {"age_hours": age} for i, age in enumerate(views)},
        "joined": {"newest": "2026-11-05", "age_hours": joined},
    }


def test_staleness_thresholds() -> None:
    cfg = MonitorConfig()
    calm = {"overall": {"count": 0}, "segments": {}, "by_hour": []}
    assert monitor.threshold_breaches(cfg, 0, {}, calm, _ages(20.0, [10.0, 30.0], 30.0)) == []
    breaches = monitor.threshold_breaches(cfg, 0, {}, calm, _ages(49.0, [10.0, None, 50.0], None))
    assert breaches == [
        "bundle 2026-11-06-v3 49.0 h old > 48.0",
        "online view view1 never materialised > 48.0",
        "online view view2 50.0 h old > 48.0",
        "joined data none > 36.0",
    ]


# --- served traffic drawn by the simulator, as served-log records -------------------------------------------
DAY, DRIFT_DAY = "2026-11-04", "2026-11-05"


@pytest.fixture(scope="module")
def world() -> sw.World:
    cfg = load_config()
    users, ads, advertisers, _ = cfg.simulation.scales["tiny"]
    return sw.World(7, users, ads, advertisers, cfg.simulation.new_ads_per_day_fraction, cfg.join.max_bid)


def _gate(
    served_traffic: Callable[..., pd.DataFrame], world: sw.World, drift: Drift | None, impressions: int
) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """The monitor's drift and calibration gate on DRIFT_DAY's traffic against DAY's as the training set."""
    cfg = load_config()
    training = served_traffic(world, simulate_day(world, cfg, DAY, 7, impressions))
    reference = monitor.served_feature_frame(training)
    served = served_traffic(world, simulate_day(world, cfg, DRIFT_DAY, 7, impressions, drift))
    features = [f for f in monitor.DRIFT_FEATURES if f.name in reference]
    drift_figures = feature_drift(reference, monitor.served_feature_frame(served), features, cfg.monitor.psi_bins)
    users, ads = set(training["user_id"]), set(training["ad_id"])
    calibration = monitor.served_calibration(served, users, ads)
    return (
        monitor.threshold_breaches(cfg.monitor, len(served), drift_figures, calibration, None),
        drift_figures,
        calibration,
    )


def test_simulated_traffic_without_drift_passes(served_traffic: Callable[..., pd.DataFrame], world: sw.World) -> None:
    breaches, drift, calibration = _gate(served_traffic, world, None, 20_000)
    assert breaches == []
    assert max(d["psi"] for d in drift.values()) < 0.05
    assert 0.9 < calibration["overall"]["oe_ratio"] < 1.1


def test_drifted_traffic_fails_on_the_features_that_moved(
    served_traffic: Callable[..., pd.DataFrame], world: sw.World
) -> None:
    drift = Drift(dt.date.fromisoformat(DRIFT_DAY), frozenset({"traffic"}))
    breaches, figures, _ = _gate(served_traffic, world, drift, 20_000)
    assert {b.split()[1] for b in breaches if b.startswith("PSI")} == {"placement", "device", "os"}
    assert figures["placement"]["psi"] > 0.4


def test_drifted_clicks_fail_calibration(served_traffic: Callable[..., pd.DataFrame], world: sw.World) -> None:
    drift = Drift(dt.date.fromisoformat(DRIFT_DAY), frozenset({"clicks"}))
    breaches, _, calibration = _gate(served_traffic, world, drift, 100_000)
    assert calibration["overall"]["oe_ratio"] > 1.3
    assert any(b.startswith("O/E overall") for b in breaches)
    assert not any(b.startswith(("PSI", "KS")) for b in breaches)


# --- labels from the raw click hours --------------------------------------------------------------------
def _write_clicks(layout: Layout, hour: dt.datetime, clicks: list[str], complete: bool = True) -> None:
    path = layout.raw_hour("clicks", hour.date().isoformat(), hour.hour)
    path.mkdir(parents=True, exist_ok=True)
    (path / "part-0.json.gz").write_bytes(gzip.compress("".join(line + "\n" for line in clicks).encode()))
    if complete:
        (path / COMPLETE_MARKER).touch()


def test_served_impressions_are_labelled_once_their_window_and_click_hours_are_closed(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path, monitor={"lookback_hours": 12})
    layout = Layout(cfg.home)
    start, end = monitor.hour_window(cfg, "2026-11-07T05")
    assert (start, end) == (dt.datetime(2026, 11, 6, 18, tzinfo=UTC), dt.datetime(2026, 11, 7, 6, tzinfo=UTC))
    served_at = {"early": "2026-11-06T18:30:00.000Z", "clicked_late": "2026-11-06T19:00:00.000Z",
                 "late": "2026-11-07T01:00:00.000Z", "before": "2026-11-06T17:59:59.000Z"}  # fmt: skip
    for ds in ("2026-11-06", "2026-11-07"):
        directory = layout.served_log / f"dt={ds}"
        directory.mkdir(parents=True)
        lines = [
            json.dumps(
                {
                    "impression_id": name,
                    "ts": ts,
                    "user_id": "u",
                    "ad_id": "a",
                    "position": 1,
                    "pctr_served": 0.1,
                    SERVED_FEATURES: {},
                }
            )  # fmt: skip
            for name, ts in served_at.items()
            if ts.startswith(ds)
        ]
        (directory / "1.jsonl").write_text("\n".join([*lines, '{"torn'] if ds == "2026-11-07" else lines) + "\n")
    served, malformed = monitor.read_served(layout, start, end)
    assert sorted(served["impression_id"]) == ["clicked_late", "early", "late"] and malformed == 1

    hours = [start + dt.timedelta(hours=i) for i in range(12)]
    for hour in hours:
        clicks = []
        if hour.hour == 18:
            clicks = [json.dumps({"impression_id": "early", "ts": "2026-11-06T18:40:00.000Z"}), "{not json"]
        if hour.hour == 1:  # 6 h 30 min after its impression: outside the window
            clicks = [json.dumps({"impression_id": "clicked_late", "ts": "2026-11-07T01:30:00.000Z"})]
        _write_clicks(layout, hour, clicks, complete=hour.hour != 2)
    clicks, known_until = monitor.first_clicks(cfg, start, end)
    assert known_until == dt.datetime(2026, 11, 7, 2, tzinfo=UTC)  # hour 02 is not complete yet
    labelled = monitor.label_closed(served, clicks, known_until, dt.timedelta(hours=6))
    assert dict(zip(labelled["impression_id"], labelled["label"], strict=True)) == {"early": 1, "clicked_late": 0}
