"""User x category statistics of the Spark feature job against pandas, on a tiny hand-made home.

Features are built for four days only (build_features reads whichever earlier daily aggregates
exist): C is 4 days after B and 8 after A (the 7-day window drops A), D is 30 days after A (A's
pairs leave the 30-day window and get one row of defaults). Ad a2 moves from ``auto`` to ``food``
between A and C: a row counts for its ad's category as of the row's day.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from core.config import PctrConfig, load_config
from core.layout import Layout, day_bounds, shift_ds
from jobs.join_logs import LABELLED_COLUMNS
from jobs.pipeline import run_stage
from jobs.training_set import entity_rows
from models.features import (
    CATEGORY_KEY,
    CTR_PRIOR_IMPRESSIONS,
    ENTITIES,
    EXPOSURES_FEATURE,
    batch_features,
    stat_name,
)

pytestmark = pytest.mark.integration

A, B, C, D = "2026-10-01", "2026-10-05", "2026-10-09", "2026-10-31"
USERS = [f"u{i}" for i in range(6)]
CATEGORIES = {"a0": "auto", "a1": "auto", "a2": "auto", "a3": "food", "a4": "travel", "a5": "travel"}
MOVED = ("a2", "food", "2026-10-07")  # ad, new category, the day it changes
NEG_RATE = 0.1
KEYS = list(ENTITIES["user_category"].keys)


def _catalogs(layout: Layout) -> None:
    start = pd.Timestamp("2026-01-01", tz="UTC")
    users = pd.DataFrame({"user_id": USERS, "age_bucket": "25-34", "gender": "f", "valid_from": start})
    ads = pd.DataFrame(
        {
            "ad_id": list(CATEGORIES),
            "advertiser_id": [f"adv{i % 2}" for i in range(len(CATEGORIES))],
            "campaign_id": "c0",
            "category": list(CATEGORIES.values()),
            "creative_type": "image",
            "bid": 1.0,
            "daily_budget": 100.0,
            "launch_ts": start,
            "valid_from": start,
        }
    )
    ad, category, day = MOVED
    moved = ads[ads["ad_id"] == ad].assign(category=category, valid_from=day_bounds(day)[0] + dt.timedelta(hours=1))
    for table, frame, ds in (("users", users, A), ("ads", ads, A), ("ads", moved, day)):
        (layout.catalog(table) / f"dt={ds}").mkdir(parents=True)
        frame.to_parquet(layout.catalog(table) / f"dt={ds}" / "part-0.parquet", index=False)


def _joined_day(layout: Layout, ds: str, rng: np.random.Generator, n: int = 60) -> pd.DataFrame:
    """A day as join_logs writes it: the labelled log of every row, and the rows kept by downsampling.

    Returns the labelled log, which is what the features count.
    """
    ads = rng.choice(list(CATEGORIES), n)
    label = (rng.random(n) < 0.3).astype(np.int32)
    ts = day_bounds(ds)[0] + pd.to_timedelta(np.sort(rng.integers(0, 86_400, n)), unit="s")
    frame = pd.DataFrame(
        {
            "impression_id": [f"{ds}-{i}" for i in range(n)],
            "ts": pd.Series(ts).astype("datetime64[us, UTC]"),
            "user_id": rng.choice(USERS[:-1] if ds == A else USERS[1:], n),  # u0 only on A, u5 never on A
            "ad_id": ads,
            "advertiser_id": [f"adv{int(a[1]) % 2}" for a in ads],
            "placement": "feed",
            "position": np.int32(1),
            "device": "ios",
            "os": "ios17",
            "country": "US",
            "hour": pd.Series(ts).dt.hour.to_numpy(),
            "label": label,
            "neg_rate": NEG_RATE,
            "weight": np.where(label == 1, 1.0, 1.0 / NEG_RATE),
        }
    )
    frame[EXPOSURES_FEATURE] = frame.groupby(["user_id", "ad_id"]).cumcount()  # rows are in time order
    kept = frame[(frame["label"] == 1) | (rng.random(n) < NEG_RATE)]
    for path, rows in ((layout.labelled(ds), frame[list(LABELLED_COLUMNS)]), (layout.joined(ds), kept)):
        (path / "data").mkdir(parents=True)
        rows.to_parquet(path / "data" / "part-0.parquet", index=False)
    (layout.joined(ds) / "_stats.json").write_text("{}")
    return frame


def _category(ad_id: str, ds: str) -> str:
    ad, category, day = MOVED
    return category if ad_id == ad and ds >= day else CATEGORIES[ad_id]


def expected_pairs(joined: dict[str, pd.DataFrame], ds: str) -> pd.DataFrame:
    """The user x category features of ds from the labelled logs of the days up to ds (spec defaults for none)."""
    rows = pd.concat(
        [
            frame.assign(age=(dt.date.fromisoformat(ds) - dt.date.fromisoformat(day)).days)
            for day, frame in joined.items()
        ]
    )
    rows = rows[rows["age"].between(0, 30)]
    rows[CATEGORY_KEY] = [_category(a, d) for a, d in zip(rows["ad_id"], rows["ts"].dt.date.astype(str), strict=True)]
    out = rows[KEYS].drop_duplicates().set_index(KEYS).sort_index()
    for w in ENTITIES["user_category"].windows:
        window = rows[rows["age"] < w]
        global_ctr = window["label"].mean()
        user = window.groupby("user_id").agg(i=("label", "size"), c=("label", "sum"))
        user_ctr = (user["c"] + CTR_PRIOR_IMPRESSIONS * global_ctr) / (user["i"] + CTR_PRIOR_IMPRESSIONS)
        pair = window.groupby(KEYS).agg(i=("label", "size"), c=("label", "sum")).reindex(out.index)
        active = rows[rows["age"] < 30].set_index(KEYS).index  # a pair only in the day leaving the window: defaults
        # a user without impressions in the window has the global CTR of the window
        prior = user_ctr.reindex(out.index.get_level_values("user_id")).fillna(global_ctr).to_numpy()
        ctr = (pair["c"].fillna(0) + CTR_PRIOR_IMPRESSIONS * prior) / (pair["i"].fillna(0) + CTR_PRIOR_IMPRESSIONS)
        out[stat_name("user_category", "impressions", w)] = pair["i"].fillna(0.0)
        out[stat_name("user_category", "clicks", w)] = pair["c"].fillna(0.0)
        out[stat_name("user_category", "ctr", w)] = np.where(out.index.isin(active), ctr, 0.0)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[PctrConfig, dict[str, pd.DataFrame]]:
    cfg = load_config(home=tmp_path_factory.mktemp("features"))
    layout = Layout(cfg.home)
    _catalogs(layout)
    rng = np.random.default_rng(3)
    joined = {}
    for ds in (A, B, C, D):
        joined[ds] = _joined_day(layout, ds, rng)
        run_stage(cfg, "build_features", ds)
    return cfg, joined


@pytest.mark.parametrize("ds", [A, B, C, D])
def test_user_category_features_equal_a_pandas_computation(built, ds: str) -> None:
    cfg, joined = built
    files = pd.read_parquet(Layout(cfg.home).feature_files("user_category", ds))
    expected = expected_pairs({d: f for d, f in joined.items() if d <= ds}, ds)
    got = files.set_index(KEYS).sort_index()
    assert got.index.tolist() == expected.index.tolist()
    names = [f.name for f in batch_features("user_category")]
    assert list(got.columns) == [*names, "event_timestamp", "created_timestamp"]
    for name in names:
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_windows_catalog_changes_and_leaving_pairs_show_in_the_data(built) -> None:
    """Guards against a vacuous comparison: the cases the module docstring describes really occur."""
    cfg, joined = built
    layout = Layout(cfg.home)
    at_c = pd.read_parquet(layout.feature_files("user_category", C)).set_index(KEYS)
    assert (at_c["user_category_impressions_7d"] < at_c["user_category_impressions_30d"]).any()  # A left 7 days
    assert all((joined[ds]["ad_id"] == MOVED[0]).any() for ds in (A, C))  # shown before and after its move
    at_d = pd.read_parquet(layout.feature_files("user_category", D)).set_index(KEYS)
    leaving = at_d.loc["u0"]  # u0 was active on A only: each of its pairs has one row of defaults
    assert len(leaving) and (leaving.drop(columns=["event_timestamp", "created_timestamp"]) == 0.0).all().all()
    assert shift_ds(A, 30) == D
    assert "u0" not in pd.read_parquet(layout.daily_aggregates("user_category", D) / "data")["user_id"].tolist()


def test_training_rows_get_the_pairs_of_the_last_day_before_them(built) -> None:
    """Feast's point-in-time join on (user_id, category), with the category from the catalog as of the row's day."""
    from feature_repo.definitions import view_refs
    from feature_repo.store import feature_store

    cfg, joined = built
    store = feature_store(cfg, apply=True)
    rows = entity_rows(Layout(cfg.home), "joined", [C, D])
    found = store.get_historical_features(entity_df=rows, features=view_refs("user_category")).to_df()
    assert len(found) == len(rows)
    assert set(found.loc[found["ad_id"] == MOVED[0], CATEGORY_KEY]) == {MOVED[1]}
    for ds, before in ((C, B), (D, C)):
        day = found[found["ts"].dt.date.astype(str) == ds].set_index(KEYS)
        expected = expected_pairs({d: f for d, f in joined.items() if d <= before}, before)
        for name in (f.name for f in batch_features("user_category")):
            want = expected[name].reindex(day.index).fillna(0.0)
            np.testing.assert_allclose(day[name].fillna(0.0), want, rtol=1e-5, atol=1e-6, err_msg=name)
