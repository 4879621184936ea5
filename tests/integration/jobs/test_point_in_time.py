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
    # and the next day through 05:00-06:00, the end of the last day's 6-hour attribution window
    logs.run(cfg, start=DAYS[0], days=len(DAYS) + 1, scale="tiny", until_hour=5)
    for ds in DAYS:
        run_stage(cfg, "join_logs", ds)
        if ds != DAYS[-1]:
            run_stage(cfg, "build_features", ds)
            run_stage(cfg, "materialize", ds)
    run_stage(cfg, "training_set", DAYS[-1])
    layout = Layout(cfg.home)
    labelled = pd.concat([pd.read_parquet(layout.labelled(d) / "data") for d in DAYS], ignore_index=True)
    return cfg, labelled


def _expected(
    labelled: pd.DataFrame, key: str, entity_id: str, ts: pd.Timestamp, days: int, delay: pd.Timedelta
) -> tuple[float, float]:
    """Impressions and clicks of the entity over the ``days`` whole days whose features existed at ``ts``.

    Features of day D exist ``delay`` after D ends (its attribution window and the job's lag): a row at
    03:00 sees the day before yesterday's, one at noon yesterday's.
    """
    newest_day_end = pd.Timestamp(day_bounds((ts - delay).date().isoformat())[0])
    window = labelled[
        (labelled[key] == entity_id)
        & (labelled["ts"] < newest_day_end)
        & (labelled["ts"] >= newest_day_end - pd.Timedelta(days=days))
    ]
    return float(len(window)), float(window["label"].sum())


def _check(cfg, labelled: pd.DataFrame, rows: pd.DataFrame) -> int:
    checked = 0
    for _, row in rows.iterrows():
        for entity, key in (("user", "user_id"), ("ad", "ad_id"), ("advertiser", "advertiser_id")):
            for days in WINDOWS_DAYS:
                impressions, clicks = _expected(labelled, key, row[key], row["ts"], days, cfg.feature_delay)
                assert row[stat_name(entity, "impressions", days)] == pytest.approx(impressions, rel=1e-5, abs=1e-4)
                assert row[stat_name(entity, "clicks", days)] == pytest.approx(clicks, abs=1e-4)
                checked += 1
    return checked


@pytest.mark.parametrize("split", ["train", "validation", "holdout"])
def test_batch_features_equal_a_computation_from_data_whose_features_existed(splits, split: str) -> None:
    cfg, labelled = splits
    rows = load_split(cfg, DAYS[-1], split).sample(n=60, random_state=1)
    assert _check(cfg, labelled, rows) == 60 * 3 * len(WINDOWS_DAYS)


def test_a_row_before_the_attribution_window_closed_sees_the_features_of_two_days_before(splits) -> None:
    """At 03:00 on D+1 the clicks of D are still arriving: serving has D-1's features, and so has training."""
    cfg, labelled = splits
    holdout = load_split(cfg, DAYS[-1], "holdout")
    early = holdout[holdout["ts"] < pd.Timestamp(DAYS[-1], tz="UTC") + cfg.feature_delay].sample(n=30, random_state=2)
    assert _check(cfg, labelled, early) == 30 * 3 * len(WINDOWS_DAYS)
    # with features stamped at the end of their day (no delay) some of these rows would count other clicks
    leaky = [
        _expected(labelled, "user_id", row["user_id"], row["ts"], 7, pd.Timedelta(0))[0] for _, row in early.iterrows()
    ]
    assert (early["user_impressions_7d"].to_numpy() != leaky).any()


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
