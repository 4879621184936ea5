"""Feast online stores on real servers: sqlite (default) and Redis (a redis-server on loopback, started by make)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pandas as pd
import pytest

from core.config import load_config
from core.layout import Layout, feature_event_time, feature_window
from feature_repo.definitions import view_refs
from feature_repo.store import feature_store
from models.features import ENTITIES, batch_features

pytestmark = pytest.mark.integration
DS = "2026-11-03"
REDIS = f"127.0.0.1:{os.environ.get('PCTR_TEST_REDIS_PORT', '6390')}"


KEYS = {
    "user": {"user_id": ["u1", "u2", "u3"]},
    "ad": {"ad_id": ["a1"]},
    "advertiser": {"advertiser_id": ["v1"]},
    "user_category": {"user_id": ["u1", "u1", "u2"], "category": ["auto", "food", "auto"]},
}


def _write_features(layout: Layout, delay: dt.timedelta) -> dict[str, pd.DataFrame]:
    """Feature files of DS for every entity as build_features writes them, indexed by their keys."""
    event = pd.Timestamp(feature_event_time(DS, delay)).as_unit("us")
    frames = {}
    for entity, spec in ENTITIES.items():
        frame = pd.DataFrame(KEYS[entity])
        n = len(frame)
        for i, feature in enumerate(batch_features(entity)):
            frame[feature.name] = (
                [f"{feature.name}-{j}" for j in range(n)]
                if feature.dtype == "string"
                else pd.Series([float(i + j) / 7 for j in range(n)], dtype="float32")
            )
        frame["event_timestamp"] = event
        frame["created_timestamp"] = event
        path = layout.feature_files(entity, DS) / "part-0.parquet"
        path.parent.mkdir(parents=True)
        frame.to_parquet(path, index=False)
        frames[entity] = frame.set_index(list(spec.keys))
    return frames


def _assert_served(online: pd.DataFrame, expected: pd.DataFrame, keys: list[tuple[str, ...]]) -> None:
    """The first rows of ``online`` hold ``expected`` at ``keys``; the last row is unknown and empty."""
    for name in expected.columns.drop(["event_timestamp", "created_timestamp"]):
        want = [expected.at[k if len(k) > 1 else k[0], name] for k in keys]
        got = online[name].tolist()
        if isinstance(want[0], str):
            assert got[: len(keys)] == want
        else:
            assert got[: len(keys)] == pytest.approx(want, rel=1e-6)
        assert pd.isna(got[-1])  # unknown entities come back empty; serving fills the spec default


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_materialized_day_is_served_online(online_store: str, tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    cfg.features.online_store = online_store
    cfg.features.redis_connection = REDIS
    cfg.features.project = f"pctr_test_{os.getpid()}"  # a Redis server is shared: keep keys apart
    expected = _write_features(Layout(tmp_path), cfg.feature_delay)
    store = feature_store(cfg, apply=True)
    start, end = feature_window(DS, cfg.feature_delay)
    store.materialize(start_date=start, end_date=end, feature_views=["user_features", "user_category_features"])

    online = store.get_online_features(
        features=view_refs("user"), entity_rows=[{"user_id": u} for u in ["u2", "u1", "nobody"]]
    ).to_df()
    assert online["user_id"].tolist() == ["u2", "u1", "nobody"]
    _assert_served(online, expected["user"], [("u2",), ("u1",)])

    # one read for several categories of a user, as the ranker makes it; (u2, food) was never seen
    pairs = [("u1", "food"), ("u1", "auto"), ("u2", "food")]
    online = store.get_online_features(
        features=view_refs("user_category"), entity_rows=[{"user_id": u, "category": c} for u, c in pairs]
    ).to_df()
    assert list(zip(online["user_id"], online["category"], strict=True)) == pairs
    _assert_served(online, expected["user_category"], pairs[:2])
    if online_store == "redis":
        store.teardown()
