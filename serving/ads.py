"""The served ads table, held in memory: row i is the ad of FAISS id i.

It carries every ad-side batch feature of the spec (the bid among them) and the campaign id, so that
the service never asks the online store about ads while it answers a request: retrieval returns rows of
it, the ranker's batch takes their features from it, the auction their bids and the served log their
campaigns. A bundle brings the table of its publish (``load_ads``); with ``serving.ads_refresh_seconds``
set, the service replaces it with the current ads now and then (``serving.fresh_ads``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.features import AD_TABLE_COLUMNS, AD_TABLE_FEATURES, BID_FEATURE, BY_NAME

AdsTable = dict[str, np.ndarray]  # column name -> values, one per ad


def load_ads(path: Path, index_size: int) -> AdsTable:
    """The ads table as numpy columns (spec defaults filled): ad-side features (the bid among them), campaign_id.

    Raises ``ValueError`` if a column is missing, if its rows are not the FAISS index's
    (``index_size``), or if a bid is negative or not finite.
    """
    import pandas as pd

    table = pd.read_parquet(path)
    columns = ads_columns(table, str(path))
    if len(table) != index_size:
        raise ValueError(f"{path} has {len(table)} rows but the FAISS index {index_size}: row i must be FAISS id i")
    return columns


def ads_columns(table: Any, source: str) -> AdsTable:
    """The ads table of a pandas frame with the ``AD_TABLE_COLUMNS`` (nulls take the spec defaults).

    Raises ``ValueError`` naming ``source`` if a column is missing or a bid is negative or not finite.
    """
    from models.frames import as_strings, fill_defaults

    missing = [c for c in AD_TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{source} lacks columns {missing}")
    bids = table[BID_FEATURE].to_numpy(np.float64)
    if not np.all(np.isfinite(bids) & (bids >= 0)):
        raise ValueError(f"{source}: bids must be finite and >= 0")
    filled = fill_defaults(table, [BY_NAME[name] for name in AD_TABLE_FEATURES])
    columns = {name: filled[name].to_numpy() for name in AD_TABLE_FEATURES}
    columns["campaign_id"] = as_strings(table["campaign_id"].fillna("").to_numpy())
    return columns
