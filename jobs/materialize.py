"""Feast stage: register the declarations and load the features of ds into the online store."""

from __future__ import annotations

import time

from core.config import PctrConfig
from core.io import Stats, write_stats
from core.layout import Layout, day_bounds
from feature_repo.store import feature_store
from models.features import FEATURE_ENTITIES


def run(cfg: PctrConfig, ds: str) -> Stats:
    """``feast apply`` then ``materialize(ds start, ds end)``.

    Not ``materialize_incremental``: its first run starts at now - ttl, so a backfilled (historical)
    day would silently load nothing.
    """
    from feature_repo.definitions import view_name

    started = time.time()
    layout = Layout(cfg.home)
    missing = [e for e in FEATURE_ENTITIES if not (layout.features(e, ds) / "features.parquet").exists()]
    if missing:
        raise FileNotFoundError(f"features of ds={ds} missing for {missing}: run `pctr build-features --ds {ds}`")
    store = feature_store(cfg, apply=True)
    start, end = day_bounds(ds)
    views = [view_name(e) for e in FEATURE_ENTITIES]
    store.materialize(start_date=start, end_date=end, feature_views=views)
    stats: Stats = {
        "stage": "materialize",
        "ds": ds,
        "feature_views": views,
        "window": [start.isoformat(), end.isoformat()],
        "online_store": cfg.features.online_store,
        "offline_store": cfg.features.offline_store,
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(layout.stage_output("materialize", ds), stats)
