"""Suite-wide hooks."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

# Before anything imports Feast: importing feast sets PROMETHEUS_MULTIPROCESS_DIR, after which every
# prometheus_client imported later shares counter values across all registries of the process, and
# the service's per-app metrics would count the requests of other tests. (`pctr serve` imports
# prometheus_client before Feast too.)
import prometheus_client  # noqa: F401
import pytest

if TYPE_CHECKING:
    import pandas as pd

    from simulator.traffic import DayLog


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the shared Spark session while logging still works (py4j logs from its finalizers otherwise)."""
    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


@pytest.fixture(scope="session")
def served_traffic() -> Callable[..., pd.DataFrame]:
    """A simulated day's impressions as the service's served-log records (``serving.served_log``'s fields; the
    impression ids those of the simulator's raw logs), the served features those the simulator knows
    (request fields and catalog attributes, no windowed statistics), labelled by their simulated clicks.
    Their ``pctr_served`` is the legacy server's estimate, or ``pctr``."""
    import numpy as np
    import pandas as pd

    from core.raw_logs import SERVED_FEATURES
    from simulator import world as sw
    from simulator.traffic import HOUR_MS

    def records(world: sw.World, log: DayLog, pctr: np.ndarray | None = None) -> pd.DataFrame:
        user, ad, ads = log.user, log.ad, log.ads
        names = lambda table, index: np.array(table, dtype=object)[index]  # noqa: E731
        features = pd.DataFrame({
            "placement": names(sw.PLACEMENTS, log.placement), "position": 1,
            "device": names(sw.DEVICES, world.device[user]), "os": names(sw.OS_NAMES, world.os[user]),
            "country": names(sw.COUNTRIES, world.country[user]),
            "hour": (log.imp_ms - sw.day_ms(dt.date.fromisoformat(log.ds))) // HOUR_MS,
            "user_ad_impressions_today": sw.earlier_exposures(user, ad),
            "user_age_bucket": names(sw.AGE_BUCKETS, world.age[user]),
            "user_gender": names(sw.GENDERS, world.gender[user]), "ad_category": names(sw.CATEGORIES, ads.cat[ad]),
            "ad_creative_type": names(sw.CREATIVES, ads.video[ad] * 1),
            "ad_age_days": (log.imp_ms - ads.launch_ms[ad]) / sw.DAY_MS, "ad_bid": ads.bid[ad],
        })  # fmt: skip
        compact = log.ds.replace("-", "")
        return pd.DataFrame({
            "impression_id": [f"i{compact}-{i}" for i in range(len(ad))],
            "ts": pd.to_datetime(log.imp_ms, unit="ms", utc=True),
            "user_id": world.user_ids[user], "ad_id": log.ad_ids[ad], "position": log.position,
            "pctr_served": log.pctr_served if pctr is None else pctr, SERVED_FEATURES: features.to_dict("records"),
            "label": (log.click_ms >= 0).astype(np.int64),
        })  # fmt: skip

    return records
