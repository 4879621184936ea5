"""Feast stage: register the declarations and load the features of ds into the online store."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from core.config import PctrConfig
from core.io import Stats, write_stats
from core.layout import Layout, feature_window
from feature_repo.store import feature_store
from models.features import FEATURE_ENTITIES


def run(cfg: PctrConfig, ds: str) -> Stats:
    """``feast apply``, then ``materialize`` of the event times of ds's features into the online store, for every
    view it holds nothing newer for.

    Not ``materialize_incremental``: its first run starts at now - ttl, so a backfilled (historical)
    day would silently load nothing. A view already materialised past ds (Feast's registry records
    every interval loaded) is skipped: the sqlite online store overwrites without comparing event
    times, so a backfilled day would rewind the values served. The offline store, which training
    reads, has every day either way.
    """
    from feature_repo.definitions import view_name

    started = time.time()
    layout = Layout(cfg.home)
    missing = [e for e in FEATURE_ENTITIES if not layout.feature_files(e, ds).exists()]
    if missing:
        raise FileNotFoundError(f"features of ds={ds} missing for {missing}: run `pctr build-features --ds {ds}`")
    store = feature_store(cfg, apply=True)
    start, end = feature_window(ds, cfg.feature_delay)
    views = [view_name(e) for e in FEATURE_ENTITIES]
    newer = {name: loaded_until for name in views if (loaded_until := _loaded_until(store, name)) > end}
    loaded = [name for name in views if name not in newer]
    if loaded:
        store.materialize(start_date=start, end_date=end, feature_views=loaded)
    stats: Stats = {
        "stage": "materialize",
        "ds": ds,
        "feature_views": loaded,
        "skipped_online_holds_newer": {name: until.isoformat() for name, until in newer.items()},
        "window": [start.isoformat(), end.isoformat()],
        "online_store": cfg.features.online_store,
        "offline_store": cfg.features.offline_store,
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(layout.stage_output("materialize", ds), stats)


def _loaded_until(store: Any, view: str) -> dt.datetime:
    """The end of the newest interval materialised into the online store for ``view`` (or the epoch)."""
    ends = [
        end if end.tzinfo else end.replace(tzinfo=dt.UTC)
        for _, end in store.get_feature_view(view).materialization_intervals
    ]
    return max(ends, default=dt.datetime.fromtimestamp(0, dt.UTC))
