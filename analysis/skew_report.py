"""Training-serving skew: the feature values the ranker was fed, per served impression, against offline truth.

For every impression in the served log of ds (``serving.served_log``: one JSON line per impression
with ``served_features``, the exact ranker inputs) the report recomputes what the training set would
have held for the same impression and counts, per spec feature, the rows that differ:

- batch features: the point-in-time value from Feast's offline store for the impression's user, ad,
  advertiser and (user, category) at the impression's ``ts`` (``get_historical_features`` of the
  ``ranker_v1`` service's features, the call the training set makes), spec default where Feast has
  none (what serving fills for an unknown entity); the category is the served ``ad_category``, the
  key serving looked the pair up with;
- request features: recomputed from the record's own request fields: ``hour`` from ``ts`` (UTC),
  ``position`` as ``cfg.serving.default_position`` (the slot the ranker scores every ad at; the
  top-level ``position`` is the slot served), ``user_ad_impressions_today`` as the user's earlier
  impressions of the ad in the day's served log (counted as the spec defines it, as the join counts
  it from the impression log; a service restarted mid-day, or several replicas, each counting only
  their own, show up here), the ids and context fields from the record.

Numbers match within a relative tolerance (float32 round trips), strings exactly.

Not obvious: the offline truth for an impression at t in day D+1 is the features of D (event time =
the last microsecond of D), which is what serving should use too (users from Feast online, ads and
advertisers from the bundle's ``ads.parquet`` of data date D). But D's features only reach the online
store when ``materialize`` of D has run, and the ads table only when a bundle of D is published, both
some time into D+1; impressions served before that (or with an old bundle, or after a backfill has
materialized a later day) were scored on other values than training assumes. Those show up here as
mismatches on purpose: the report never compares against "whatever was latest", which would hide
exactly the lag that makes serving differ from training.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core import raw_logs
from core.config import PctrConfig
from core.io import Stats, write_stats
from core.layout import Layout
from core.raw_logs import SERVED_FEATURES
from models.features import (
    CATEGORY_FEATURE,
    CATEGORY_KEY,
    EXPOSURES_FEATURE,
    EXPOSURES_KEYS,
    EXPOSURES_ORDER,
    FEAST_ENTITIES,
    FEATURES,
    RANKER_SERVICE,
    Feature,
    batch_features,
)

if TYPE_CHECKING:
    import pandas as pd

REL_TOL = 1e-6  # float32 carries ~7 significant digits
ABS_TOL = 1e-12
ID_COLUMNS = ("impression_id", "request_id", "ts", *FEAST_ENTITIES.values())


def served_log_dir(cfg: PctrConfig, ds: str) -> Path:
    """The directory holding the served-log files of the UTC day ds (one ``<pid>.jsonl`` per process)."""
    return Layout(cfg.home).served_log / f"dt={ds}"


def read_served_log(cfg: PctrConfig, ds: str) -> tuple[pd.DataFrame, int]:
    """All served impressions of ds as a frame (``ts`` parsed to UTC), and the count of unusable lines
    (``core.raw_logs.read_served_log``); raises ``FileNotFoundError`` when the service logged nothing for ds."""
    directory = served_log_dir(cfg, ds)
    if not any(directory.glob("*.jsonl")):
        raise FileNotFoundError(
            f"no served log for ds={ds}: {directory} holds no *.jsonl files; the ranking service "
            f"(`pctr serve`) writes them while it serves traffic on that UTC day"
        )
    return raw_logs.read_served_log(directory)


def offline_batch_values(cfg: PctrConfig, log: pd.DataFrame) -> pd.DataFrame:
    """Feast's point-in-time batch features for each served row (same order; nulls where Feast has none)."""
    import pandas as pd

    from feature_repo.definitions import service_refs
    from feature_repo.store import feature_store

    log = log.assign(**{CATEGORY_KEY: log[SERVED_FEATURES].map(lambda served: served.get(CATEGORY_FEATURE))})

    def key(name: str) -> pd.Series:
        values = log[name] if name in log else pd.Series(None, index=log.index, dtype=object)
        return values.fillna("").astype(str)

    entity_df = pd.DataFrame({"_row": np.arange(len(log)), **{k: key(k) for k in FEAST_ENTITIES.values()}})
    entity_df["event_timestamp"] = log["ts"].to_numpy()
    refs = service_refs(RANKER_SERVICE)  # every batch feature of the spec
    found = feature_store(cfg).get_historical_features(entity_df=entity_df, features=refs).to_df()
    if len(found) != len(entity_df):
        raise RuntimeError(f"Feast returned {len(found)} rows for {len(entity_df)} served impressions")
    return found.sort_values("_row").reset_index(drop=True)[[f.name for f in batch_features()]]


def expected_values(cfg: PctrConfig, log: pd.DataFrame, offline: pd.DataFrame) -> pd.DataFrame:
    """What the ranker should have been fed for each served row: every spec feature, defaults filled, spec dtypes."""
    import pandas as pd

    from models.frames import fill_defaults

    expected = pd.DataFrame(index=log.index)
    for f in FEATURES:
        if f.kind == "batch":
            expected[f.name] = offline[f.name].to_numpy()
        elif f.name == "hour":
            expected[f.name] = log["ts"].dt.hour.to_numpy()
        elif f.name == "position":
            expected[f.name] = cfg.serving.default_position
        elif f.name == EXPOSURES_FEATURE:  # the user's earlier impressions of the ad in the day's served log
            order = log.sort_values(list(EXPOSURES_ORDER)).index  # the spec's order of a day's impressions
            expected[f.name] = log.loc[order].groupby(list(EXPOSURES_KEYS)).cumcount().reindex(log.index)
        else:
            expected[f.name] = log[f.name] if f.name in log else None
    return fill_defaults(expected, FEATURES)


def _matches(feature: Feature, served: pd.Series, expected: pd.Series) -> np.ndarray:
    """Row-wise equality; a value the ranker lacks (missing key, null, wrong type) never matches."""
    import pandas as pd

    if feature.dtype == "string":
        return np.array([isinstance(s, str) and s == e for s, e in zip(served, expected, strict=True)], dtype=bool)
    numbers = pd.to_numeric(served.map(lambda v: v if isinstance(v, int | float) else None), errors="coerce")
    a, b = numbers.to_numpy(np.float64), expected.to_numpy(np.float64)
    return np.isclose(a, b, rtol=REL_TOL, atol=ABS_TOL)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.isoformat().replace("+00:00", "Z") if hasattr(value, "isoformat") else value


def compare(cfg: PctrConfig, log: pd.DataFrame, offline: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per spec feature: kind, mismatch count and rate, and the first mismatching row (or None)."""
    import pandas as pd

    names = [f.name for f in FEATURES]
    served = pd.DataFrame.from_records(log[SERVED_FEATURES].tolist(), columns=names).astype(object)
    served = served.where(served.notna(), None)
    expected = expected_values(cfg, log, offline)
    out: dict[str, dict[str, Any]] = {}
    for f in FEATURES:
        wrong = np.flatnonzero(~_matches(f, served[f.name], expected[f.name]))
        example = None
        if len(wrong):
            i = int(wrong[0])
            example = {c: _plain(log.at[i, c]) for c in ID_COLUMNS if c in log}
            example |= {"served": _plain(served.at[i, f.name]), "expected": _plain(expected.at[i, f.name])}
        out[f.name] = {
            "kind": f.kind,
            "mismatch_rate": round(len(wrong) / len(log), 6),
            "mismatches": len(wrong),
            "example": example,
        }
    return out


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Compare the served log of ds with offline values; writes ``stages/skew_report/dt=<ds>/_stats.json``.

    Raises ``FileNotFoundError`` when the service logged nothing for ds.
    """
    started = time.time()
    log, malformed = read_served_log(cfg, ds)
    if len(log):
        features = compare(cfg, log, offline_batch_values(cfg, log))
    else:
        features = {f.name: {"kind": f.kind, "mismatch_rate": 0.0, "mismatches": 0, "example": None} for f in FEATURES}
    batch_rates = [v["mismatch_rate"] for v in features.values() if v["kind"] == "batch"]
    stats: Stats = {
        "stage": "skew_report",
        "ds": ds,
        "rows_compared": len(log),
        "malformed_lines": malformed,
        "features": features,
        "max_batch_mismatch_rate": max(batch_rates, default=0.0),
        "served_log": str(served_log_dir(cfg, ds)),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(Layout(cfg.home).stage_output("skew_report", ds), stats)
