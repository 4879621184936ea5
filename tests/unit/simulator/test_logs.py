"""The log simulator: file contracts, determinism, click statistics and injected faults (tiny scale)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from core.config import PctrConfig, load_config
from core.layout import Layout, day_bounds, ds_range, shift_ds
from core.raw_logs import COMPLETE_MARKER, IMPRESSION_RECORD_KEYS, RAW_EVENTS, RawHour
from simulator import logs
from simulator.traffic import Drift
from simulator.world import World

START = "2026-11-20"
DAYS = 2
FAULTS = 0.04
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _simulate(home: Path, start: str = START, days: int = DAYS, **kwargs: Any) -> tuple[PctrConfig, dict]:
    cfg = load_config(home=home)
    return cfg, logs.run(cfg, start, days, scale="tiny", **kwargs)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[PctrConfig, dict]:
    return _simulate(tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[PctrConfig, dict]:
    return _simulate(tmp_path_factory.mktemp("faulty"), faults=FAULTS)


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def _raw_lines(cfg: PctrConfig, event: str) -> dict[Path, list[str]]:
    return {p: _lines(p) for p in sorted(Layout(cfg.home).raw(event).glob("dt=*/hour=*/*.json.gz"))}


def _impressions(cfg: PctrConfig) -> pd.DataFrame:
    rows = [json.loads(line) for lines in _raw_lines(cfg, "impressions").values() for line in lines]
    return pd.DataFrame(rows)


def _truth(cfg: PctrConfig) -> pd.DataFrame:
    return pd.read_parquet(Layout(cfg.home).truth())


def _tree(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def test_unknown_scale_and_bad_arguments_are_rejected(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    with pytest.raises(ValueError, match=r"valid: .*small.*tiny"):
        logs.run(cfg, START, 1, scale="huge")
    with pytest.raises(ValueError, match="faults"):
        logs.run(cfg, START, 1, scale="tiny", faults=1.5)
    assert not (tmp_path / "data").exists()


def test_impression_lines_follow_the_contract(clean: tuple[PctrConfig, dict]) -> None:
    cfg, stats = clean
    layout = Layout(cfg.home)
    for ds in ds_range(START, DAYS):
        start, end = day_bounds(ds)
        files = sorted(layout.raw("impressions", ds).glob("hour=*/part-0.json.gz"))
        assert [f.parent.name for f in files] == [f"hour={h:02d}" for h in range(24)]
        n, slots = 0, Counter()
        for hour, path in enumerate(files):
            for line in _lines(path):
                row = json.loads(line)
                n += 1
                assert tuple(row) == IMPRESSION_RECORD_KEYS  # the raw schema, in its order
                assert TS_RE.match(row["ts"]), row["ts"]
                ts = dt.datetime.fromisoformat(row["ts"])
                assert start <= ts < end and ts.hour == hour
                assert isinstance(row["position"], int) and 1 <= row["position"] <= cfg.join.max_position
                assert isinstance(row["bid"], float) and 0 < row["bid"] <= cfg.join.max_bid
                assert 0 < row["pctr_served"] < 1
                assert row["model_version"] == "sim-legacy" and row["served_features"] is None
                assert row["impression_id"].startswith(f"i{ds.replace('-', '')}-")
                assert all(isinstance(row[k], str) and row[k] for k in ("user_id", "ad_id", "campaign_id", "os"))
                slots[row["request_id"], row["ad_id"]] += 1
        assert n == stats["per_day"][ds]["impressions"] == cfg.simulation.scales["tiny"][3]
        # the legacy server rarely repeats an ad within one request (never unless redraws run out)
        assert sum(c - 1 for c in slots.values()) < 0.002 * n


def test_clicks_and_conversions_land_in_their_own_hour_after_the_impression(clean: tuple[PctrConfig, dict]) -> None:
    cfg, stats = clean
    imp_ts = _impressions(cfg).set_index("impression_id")["ts"].map(dt.datetime.fromisoformat)
    partitions = set()
    for event, keys in (("clicks", {"impression_id", "ts"}), ("conversions", {"impression_id", "ts", "value"})):
        n = 0
        for path, lines in _raw_lines(cfg, event).items():
            origin = re.fullmatch(r"part-from-(\d{4}-\d\d-\d\d)\.json\.gz", path.name).group(1)
            for line in lines:
                row = json.loads(line)
                n += 1
                assert set(row) == keys and TS_RE.match(row["ts"])
                ts = dt.datetime.fromisoformat(row["ts"])
                assert path.parent.name == f"hour={ts.hour:02d}" and path.parent.parent.name == f"dt={ts.date()}"
                assert ts > imp_ts[row["impression_id"]]
                assert row["impression_id"].startswith(f"i{origin.replace('-', '')}-")
                partitions.add(ts.date().isoformat())
        assert n == stats["rows"][event] > 0
    # late clicks of the last day reach the day after the run
    assert shift_ds(START, DAYS) in partitions


def test_catalogs_grow_daily_and_no_ad_is_shown_before_launch(clean: tuple[PctrConfig, dict]) -> None:
    cfg, _ = clean
    layout = Layout(cfg.home)
    users = pq.read_table(layout.catalog("users") / f"dt={START}" / "part-0.parquet")
    assert users.schema.names == ["user_id", "age_bucket", "gender", "country", "signup_ts", "valid_from"]
    assert str(users.schema.field("signup_ts").type) == "timestamp[us, tz=UTC]"
    assert users.num_rows == cfg.simulation.scales["tiny"][0]
    parts = {ds: pq.read_table(layout.catalog("ads") / f"dt={ds}" / "part-0.parquet") for ds in ds_range(START, DAYS)}
    for table in parts.values():
        assert table.schema.names == [
            "ad_id", "advertiser_id", "campaign_id", "category", "creative_type", "bid", "daily_budget",
            "launch_ts", "valid_from",
        ]  # fmt: skip
        for col in ("launch_ts", "valid_from"):
            assert str(table.schema.field(col).type) == "timestamp[us, tz=UTC]"
    first, second = (parts[ds].to_pandas() for ds in ds_range(START, DAYS))
    assert (first["launch_ts"] < day_bounds(START)[1]).all()
    assert (first["launch_ts"] < day_bounds(START)[0]).mean() > 0.9  # most ads predate the run
    day2 = day_bounds(shift_ds(START, 1))
    assert len(second) > 0 and second["launch_ts"].between(day2[0], day2[1], inclusive="left").all()
    assert ((first["bid"] > 0) & (first["bid"] <= cfg.join.max_bid)).all()
    catalog = pd.concat([first, second]).set_index("ad_id")
    imps = _impressions(cfg)
    launch = catalog.loc[imps["ad_id"], "launch_ts"].to_numpy()
    assert (launch <= pd.to_datetime(imps["ts"]).to_numpy()).all()
    assert (catalog.loc[imps["ad_id"], "advertiser_id"].to_numpy() == imps["advertiser_id"].to_numpy()).all()
    assert imps["ad_id"].isin(second["ad_id"]).any()  # ads launched during the run are served


def test_truth_matches_impressions_one_to_one(clean: tuple[PctrConfig, dict]) -> None:
    cfg, _ = clean
    truth, imps = _truth(cfg), _impressions(cfg)
    assert truth["fault"].isna().all() and truth["impression_id"].is_unique
    assert sorted(truth["impression_id"]) == sorted(imps["impression_id"])
    assert str(pq.read_schema(next(Layout(cfg.home).truth().rglob("*.parquet"))).field("ts").type) == (
        "timestamp[us, tz=UTC]"
    )
    merged = imps.merge(truth, on="impression_id")
    assert (pd.to_datetime(merged["ts_x"]) == merged["ts_y"]).all()
    assert merged["p_click"].between(0, 1, inclusive="neither").all()
    clicks = pd.DataFrame([json.loads(x) for lines in _raw_lines(cfg, "clicks").values() for x in lines])
    clicked = truth.dropna(subset=["click_ts"]).set_index("impression_id")["click_ts"]
    assert sorted(clicked.index) == sorted(clicks["impression_id"])
    assert (pd.to_datetime(clicks.set_index("impression_id")["ts"]).loc[clicked.index] == clicked).all()


def test_click_rate_late_share_and_oracle_auc(clean: tuple[PctrConfig, dict]) -> None:
    cfg, stats = clean
    truth = _truth(cfg)
    window = pd.Timedelta(hours=cfg.join.attribution_window_hours)
    assert stats["mean_true_ctr"] == pytest.approx(cfg.simulation.base_ctr, rel=1e-6)
    clicked = truth["click_ts"].notna()
    assert 0.7 * cfg.simulation.base_ctr < clicked.mean() < 1.3 * cfg.simulation.base_ctr
    late = (truth["click_ts"] - truth["ts"]) > window
    assert 0.015 < late.sum() / clicked.sum() < 0.08
    in_window = clicked & ~late
    assert 0.68 < roc_auc_score(in_window, truth["p_click"]) < 0.82


def test_reruns_and_day_by_day_runs_write_identical_bytes(clean: tuple[PctrConfig, dict], tmp_path: Path) -> None:
    cfg, _ = clean
    expected = _tree(cfg.home)
    again = tmp_path / "again"
    _simulate(again)
    assert _tree(again) == expected
    stale = Layout(again).raw_hour("clicks", shift_ds(START, 4), 5) / f"part-from-{START}.json.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an earlier run")
    _simulate(again)  # rerun in place: same bytes, no temp files, stale partitions of the day gone
    assert _tree(again) == expected

    daily = tmp_path / "daily"
    for ds in ds_range(START, DAYS):
        _simulate(daily, start=ds, days=1)
    got = _tree(daily)
    extra_users = f"data/raw/users/dt={shift_ds(START, 1)}/part-0.parquet"
    assert got.pop(extra_users) == expected[f"data/raw/users/dt={START}/part-0.parquet"]
    assert got == expected


def test_a_day_written_hour_by_hour_has_the_bytes_of_a_whole_day_run(
    faulty: tuple[PctrConfig, dict], tmp_path: Path
) -> None:
    cfg, _ = faulty
    expected = _tree(cfg.home)
    home, second = tmp_path / "hourly", shift_ds(START, 1)
    _simulate(home, days=1, faults=FAULTS)
    layout = Layout(home)
    for hour in range(24):  # as a live producer writes them
        _simulate(home, start=second, days=1, faults=FAULTS, until_hour=hour)
        assert logs.written_through(layout, second) == hour
        assert (layout.truth(second) / "part-0.parquet").exists() == (hour == 23)
    got = _tree(home)
    users = "data/raw/users/dt={}/part-0.parquet"
    assert got.pop(users.format(second)) == expected[users.format(START)]  # each call starts with the users
    assert got == expected


def test_after_a_day_is_written_through_hour_h_its_hours_up_to_h_are_complete(tmp_path: Path) -> None:
    """Every day whose events can land in those hours (the day itself and the days before it) has written them."""
    cfg, stats = _simulate(tmp_path, days=2, until_hour=5)
    layout, second = Layout(cfg.home), shift_ds(START, 1)
    assert [stats["per_day"][ds]["written_through_hour"] for ds in (START, second)] == [23, 5]
    for event in RAW_EVENTS:
        assert all(RawHour(event, START, h).is_complete(layout) for h in range(24))
        assert all(RawHour(event, second, h).is_complete(layout) for h in range(6))
        assert not any(RawHour(event, second, h).is_complete(layout) for h in range(6, 24))
    # the first day's late clicks already reached later hours of the second day and the day after it, whose own
    # clicks are not written yet: those hours hold files but are not complete
    late = sorted(layout.raw("clicks").glob(f"dt=*/hour=*/part-from-{START}.json.gz"))
    later_hours = [p.parent for p in late if p.parent.parent.name != f"dt={START}" and p.parent.name >= "hour=06"]
    assert later_hours and not any((hour / COMPLETE_MARKER).exists() for hour in later_hours)
    # nothing of the second day stamped after 05:59 is written
    second_day_files = layout.raw("clicks", second).glob(f"hour=*/part-from-{second}.json.gz")
    assert {p.parent.name for p in second_day_files} <= {f"hour={h:02d}" for h in range(6)}
    assert not (layout.truth(second) / "part-0.parquet").exists()


def test_no_day_is_simulated_after_a_day_written_only_in_part(tmp_path: Path) -> None:
    cfg, _ = _simulate(tmp_path, days=1, until_hour=5)
    with pytest.raises(ValueError, match=rf"dt={START} is written only through hour 05: simulate it whole first"):
        logs.run(cfg, shift_ds(START, 1), 1, scale="tiny")
    # logs written before markers existed: the same refusal, which says how to fix them
    for marker in Layout(cfg.home).raw("impressions").rglob(COMPLETE_MARKER):
        marker.unlink()
    with pytest.raises(ValueError, match=rf"dt={START} is written without _COMPLETE markers: .* re-simulated"):
        logs.run(cfg, shift_ds(START, 1), 1, scale="tiny")
    with pytest.raises(ValueError, match="until_hour"):
        logs.run(cfg, START, 1, scale="tiny", until_hour=24)


def test_world_is_independent_of_the_simulated_days() -> None:
    a, b = World(7, 500, 300, 20, 0.03, 100.0), World(7, 500, 300, 20, 0.03, 100.0)
    day = dt.date(2026, 11, 20)
    b.live_ads(day + dt.timedelta(days=40))  # a different history of requests must not matter
    for x, y in ((a.live_ads(day), b.live_ads(day)), (a.batch(day), b.batch(day))):
        assert all(np.array_equal(getattr(x, k), getattr(y, k)) for k in x.__dataclass_fields__)
    assert np.array_equal(a.interest, b.interest)
    # the number of live ads stays near the configured catalog size
    assert 0.8 * 300 < len(a.live_ads(day)) < 1.2 * 300
    assert 0.8 * 300 < len(a.live_ads(day + dt.timedelta(days=200))) < 1.2 * 300


def test_faults_are_injected_per_kind_and_detectable(
    faulty: tuple[PctrConfig, dict], clean: tuple[PctrConfig, dict]
) -> None:
    cfg, stats = faulty
    per_day = round(FAULTS * cfg.simulation.scales["tiny"][3] / len(logs.FAULT_KINDS))
    assert stats["fault_counts"] == {kind: DAYS * per_day for kind in logs.FAULT_KINDS}
    truth = _truth(cfg)
    marked = truth.groupby("fault")["impression_id"].apply(set).to_dict()
    assert {k: len(v) for k, v in marked.items()} == {kind: DAYS * per_day for kind in logs.FAULT_KINDS}

    lines = [line for ls in _raw_lines(cfg, "impressions").values() for line in ls]
    good = [json.loads(line) for line in lines if _parses(line)]
    assert len(lines) - len(good) == DAYS * per_day  # malformed
    ids = Counter(row["impression_id"] for row in good)
    assert {i for i, c in ids.items() if c > 1} == marked["duplicate"] and max(ids.values()) == 2
    by_id: dict[str, list[str]] = {}
    for row in good:
        by_id.setdefault(row["impression_id"], []).append(json.dumps(row, sort_keys=True))
    assert all(len(set(by_id[i])) == 1 for i in marked["duplicate"])
    assert not set(ids) & marked["malformed"]
    bad = {
        row["impression_id"] for row in good
        if not (0 < row["bid"] <= cfg.join.max_bid and 1 <= row["position"] <= cfg.join.max_position)
    }  # fmt: skip
    assert bad == marked["out_of_range"]

    click_ids = {json.loads(x)["impression_id"] for ls in _raw_lines(cfg, "clicks").values() for x in ls}
    orphans = marked["orphan_click"]
    assert orphans <= click_ids and not orphans & set(ids)
    assert not any(o in line for line in lines for o in list(orphans)[:20])
    orphan_rows = truth[truth["fault"] == "orphan_click"]
    assert orphan_rows["p_click"].isna().all() and orphan_rows["click_ts"].notna().all()

    # faults come from their own generator: the simulated traffic itself is unchanged
    clean_truth = _truth(clean[0]).set_index("impression_id")
    real = truth[truth["fault"] != "orphan_click"].set_index("impression_id")
    assert real["p_click"].equals(clean_truth.loc[real.index, "p_click"])
    assert real["click_ts"].equals(clean_truth.loc[real.index, "click_ts"])


def test_a_drift_changes_its_day_on_and_leaves_the_days_before_byte_identical(
    clean: tuple[PctrConfig, dict], tmp_path: Path
) -> None:
    cfg, stats = clean
    second = shift_ds(START, 1)
    drift = Drift(dt.date.fromisoformat(second), frozenset({"traffic", "clicks"}))
    _, drifted_stats = _simulate(tmp_path, drift=drift)

    def of_first_day(tree: dict[str, bytes]) -> dict[str, bytes]:
        """Every file but those the second day's traffic writes (its impressions, truth, and clicks and conversions)."""
        drawn_on_second = (f"impressions/dt={second}/", f"truth/dt={second}/", f"part-from-{second}")
        return {path: data for path, data in tree.items() if not any(part in path for part in drawn_on_second)}

    expected, drifted = _tree(cfg.home), _tree(tmp_path)
    assert any(f"part-from-{START}" in path and f"dt={second}" in path for path in expected)  # late clicks compared
    assert of_first_day(drifted) == of_first_day(expected)
    assert drifted_stats["drift"] == {"from": second, "kinds": ["clicks", "traffic"]}
    day = drifted_stats["per_day"][second]
    assert day["click_rate"] > 1.3 * stats["per_day"][second]["click_rate"]

    def reels_share(home: Path) -> float:
        impressions = _impressions(load_config(home=home))
        return float((impressions[impressions["ts"].str.startswith(second)]["placement"] == "reels").mean())

    assert reels_share(tmp_path) > 2 * reels_share(cfg.home)
