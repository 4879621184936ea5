"""Feast online stores on real servers: sqlite (default) and Redis (a redis-server on loopback, started by make)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from jobs.config import load_config
from jobs.feast_store import feature_store
from jobs.layout import Layout, day_bounds, feature_event_time
from models.features import batch_features

pytestmark = pytest.mark.integration
DS = "2026-11-03"
REDIS = f"127.0.0.1:{os.environ.get('PCTR_TEST_REDIS_PORT', '6390')}"


def _write_user_features(layout: Layout) -> pd.DataFrame:
    """User features of DS for three users, as build_features writes them (plus empty ad/advertiser files)."""
    event = pd.Timestamp(feature_event_time(DS)).as_unit("us")
    frames = {}
    for entity, key, ids in (
        ("user", "user_id", ["u1", "u2", "u3"]),
        ("ad", "ad_id", ["a1"]),
        ("advertiser", "advertiser_id", ["v1"]),
    ):
        frame = pd.DataFrame({key: ids})
        for i, feature in enumerate(batch_features(entity)):
            frame[feature.name] = (
                [f"{feature.name}-{j}" for j in range(len(ids))]
                if feature.dtype == "string"
                else pd.Series([float(i + j) / 7 for j in range(len(ids))], dtype="float32")
            )
        frame["event_timestamp"] = event
        frame["created_timestamp"] = event
        path = layout.features(entity, DS) / "features.parquet"
        path.parent.mkdir(parents=True)
        frame.to_parquet(path, index=False)
        frames[entity] = frame
    return frames["user"]


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_materialized_day_is_served_online(online_store: str, tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    cfg.features.online_store = online_store
    cfg.features.redis_connection = REDIS
    cfg.features.project = f"pctr_test_{os.getpid()}"  # a Redis server is shared: keep keys apart
    expected = _write_user_features(Layout(tmp_path))
    store = feature_store(cfg, apply=True)
    start, end = day_bounds(DS)
    store.materialize(start_date=start, end_date=end, feature_views=["user_features"])
    names = [f.name for f in batch_features("user")]
    online = store.get_online_features(
        features=[f"user_features:{n}" for n in names], entity_rows=[{"user_id": u} for u in ["u2", "u1", "nobody"]]
    ).to_df()
    assert online["user_id"].tolist() == ["u2", "u1", "nobody"]
    for name in names:
        want = expected.set_index("user_id").loc[["u2", "u1"], name].tolist()
        got = online[name].tolist()
        if isinstance(want[0], str):
            assert got[:2] == want
        else:
            assert got[:2] == pytest.approx(want, rel=1e-6)
        assert pd.isna(got[2])  # unknown users come back empty; serving fills the spec default
    if online_store == "redis":
        store.teardown()
