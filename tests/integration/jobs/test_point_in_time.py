"""Point-in-time correctness: a training row's batch features are computed only from data before its impression."""

from __future__ import annotations

import pandas as pd
import pytest

from core.catalog import latest_catalog
from core.config import load_config
from core.layout import Layout, day_bounds, ds_range
from jobs.pipeline import run_stage
from jobs.training_set import load_split
from models.features import WINDOWS_DAYS, stat_name
from simulator import logs

pytestmark = pytest.mark.integration
DAYS = ds_range("2026-11-01", 4)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory):
    cfg = load_config(home=tmp_path_factory.mktemp("pit"))
    cfg.train.history_days = 2
    logs.run(cfg, start=DAYS[0], days=len(DAYS), scale="tiny")
    for ds in DAYS:
        run_stage(cfg, "join_logs", ds)
        if ds != DAYS[-1]:
            run_stage(cfg, "build_features", ds)
            run_stage(cfg, "materialize", ds)
    run_stage(cfg, "training_set", DAYS[-1])
    layout = Layout(cfg.home)
    labelled = pd.concat([pd.read_parquet(layout.labelled(d) / "data") for d in DAYS], ignore_index=True)
    return cfg, labelled


def _expected(labelled: pd.DataFrame, key: str, entity_id: str, ts: pd.Timestamp, days: int) -> tuple[float, float]:
    """Impressions and clicks of the entity over the ``days`` whole days before the impression's day."""
    day_start = pd.Timestamp(day_bounds(ts.date().isoformat())[0])
    window = labelled[
        (labelled[key] == entity_id)
        & (labelled["ts"] < day_start)
        & (labelled["ts"] >= day_start - pd.Timedelta(days=days))
    ]
    return float(len(window)), float(window["label"].sum())


@pytest.mark.parametrize("split", ["train", "validation", "holdout"])
def test_batch_features_equal_a_computation_from_strictly_earlier_data(splits, split: str) -> None:
    cfg, labelled = splits
    rows = load_split(cfg, DAYS[-1], split).sample(n=60, random_state=1)
    checked = 0
    for _, row in rows.iterrows():
        for entity, key in (("user", "user_id"), ("ad", "ad_id"), ("advertiser", "advertiser_id")):
            for days in WINDOWS_DAYS:
                impressions, clicks = _expected(labelled, key, row[key], row["ts"], days)
                assert row[stat_name(entity, "impressions", days)] == pytest.approx(impressions, rel=1e-5, abs=1e-4)
                assert row[stat_name(entity, "clicks", days)] == pytest.approx(clicks, abs=1e-4)
                checked += 1
    assert checked == 60 * 3 * len(WINDOWS_DAYS)


def test_rows_carry_the_catalog_bid_of_their_ad(splits) -> None:
    cfg, _ = splits
    train = load_split(cfg, DAYS[-1], "train")
    # ads launched after the last feature day before a row (and every ad on the first day) have none yet
    known = train[train["ad_bid"].notna()]
    assert len(known) > len(train) / 3
    bids = latest_catalog(Layout(cfg.home), "ads", DAYS[-1]).set_index("ad_id")["bid"]
    assert known["ad_bid"].to_numpy() == pytest.approx(known["ad_id"].map(bids).to_numpy())


def test_features_never_use_the_impressions_own_day(splits) -> None:
    cfg, labelled = splits
    holdout = load_split(cfg, DAYS[-1], "holdout")
    same_day_only = holdout[
        ~holdout["user_id"].isin(labelled[labelled["ts"] < pd.Timestamp(DAYS[-1], tz="UTC")]["user_id"])
    ]
    # users first seen on the holdout day have no history yet: their counts must be empty, not today's
    assert (same_day_only["user_impressions_30d"] == 0).all()
