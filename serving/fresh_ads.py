"""Fresh ads: the current ads table, read from what the pipeline keeps fresh, and its merge into the served
(ads table, FAISS index) pair.

Where the current ads come from (``CurrentAds``):
- which ads there are: the newest ad features partition the pipeline writes (``features/ad/dt=<newest>``;
  the feature job gives every ad launched by the end of its day a row), joined with the ads catalog as
  of that day for each ad's advertiser and campaign, which no feature view carries. It is the
  enumeration of the publish (``jobs.train_retrieval.active_ads``). Feast's online store cannot list
  them: it is a key-value store that answers for the keys one asks about.
- their values: Feast's online store, which ``jobs.materialize`` keeps at the newest day it has loaded:
  the ad view (the bid among its features) and the advertiser view (spec defaults for an advertiser it
  does not know, as at publish). An ad it does not know (its day not materialised yet, or its values
  past the view's TTL) is left out until it does: no ad is served, or embedded, on default features or a
  default bid.

The merge (``merge_ads``) keeps row i = FAISS id i:
- an ad of the live table that is still listed keeps its vector (the one of the publish: the index stays
  the retrieval model's view of it) and takes its current values (bid, statistics) in the table;
- a listed ad the index lacks is embedded by the bundle's ad tower (``ad_tower/``, the retrieval model's
  ad tower exported beside ``user_tower/``) and appended;
- an ad no longer listed is dropped from the table and the index: nothing pauses or ends an ad in the
  catalog, so an ad stops being served when it leaves the listing or the online store; an ad whose bid
  is under the reserve stays listed but loses every auction (``serving.auction``).
Without an ad tower (a bundle published without one) a new ad cannot be embedded and waits, left out
of both: it is "pending", and the index's age keeps growing until the ad tower of a later bundle
embeds it. The new index is a copy of the live one (``faiss.clone_index``: the same type and
parameters, flat or HNSW): appended ads are added to it; after a drop the kept vectors, reconstructed
from the live index, are added to an emptied copy. The live table and index are never written, so a
failure anywhere leaves them serving as they were; the engine swaps the new pair in by one assignment.
A listing with no ad is refused: a source that lost every ad is broken, and serving nothing would follow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.catalog import latest_catalog
from core.layout import Layout
from models.features import AD_TABLE_COLUMNS, tower_features
from serving.ads import AdsTable, ads_columns
from serving.request_features import OnlineFeatures

AdTower = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # ad-tower features -> (n, d) embeddings
EMBED_BATCH = 4096  # ads per call of the ad tower: bounds the memory of a first refresh over many new ads


def newest_ad_partition(layout: Layout) -> tuple[str, Path]:
    """The ds and the directory of files of the newest ad features partition; ``FileNotFoundError`` if none."""
    days = sorted(layout.features("ad").glob("dt=*"))  # committed partitions only: a staged one is hidden (.dt=*)
    if not days:
        raise FileNotFoundError(f"no ad features under {layout.features('ad')}: nothing lists the current ads")
    ds = days[-1].name.removeprefix("dt=")
    return ds, layout.feature_files("ad", ds)


class CurrentAds:
    """The current ads table: ads listed by the newest ad features partition and the catalog, values from Feast online.

    ``online`` should be the refresher's own: a read of thousands of ads then never waits on, nor holds
    up, the requests' reads of the same store.
    """

    def __init__(self, layout: Layout, online: OnlineFeatures) -> None:
        self._layout = layout
        self._online = online

    def read(self) -> AdsTable:
        """The ads listed now that the online store knows, sorted by ad id, with their ad-side features and bids.

        Raises ``FileNotFoundError`` without a partition or catalog, ``ValueError`` if no ad remains or a
        bid is negative or not finite, and whatever Feast raises.
        """
        import pandas as pd

        ds, path = newest_ad_partition(self._layout)
        listed = pd.read_parquet(path, columns=["ad_id"]).drop_duplicates("ad_id")
        catalog = latest_catalog(self._layout, "ads", ds)[["ad_id", "advertiser_id", "campaign_id"]]
        frame = listed.merge(catalog, on="ad_id", how="inner").sort_values("ad_id").reset_index(drop=True)
        values, known = self._online.entities("ad", frame["ad_id"].tolist())
        frame = frame.assign(**values)[known].reset_index(drop=True)
        if frame.empty:
            raise ValueError(f"no current ad: the online store knows none of the {len(listed)} ads of {path}")
        advertisers = frame["advertiser_id"].drop_duplicates().tolist()
        found, _ = self._online.entities("advertiser", advertisers)
        frame = frame.merge(pd.DataFrame({"advertiser_id": advertisers, **found}), on="advertiser_id", how="left")
        return ads_columns(frame[list(AD_TABLE_COLUMNS)], f"the current ads ({path}, the online store)")


@dataclass(frozen=True)
class Merged:
    """The new (ads table, index) pair and what changed: ad ids added, dropped, and pending (not embedded)."""

    ads: AdsTable
    index: Any
    added: tuple[str, ...]
    dropped: tuple[str, ...]
    pending: tuple[str, ...]


def merge_ads(live: AdsTable, index: Any, current: AdsTable, ad_tower: AdTower | None) -> Merged:
    """The ``current`` ads over the ``live`` table's FAISS ``index`` (row i = FAISS id i): see the module docstring.

    Kept ads come first, in their live order, then the new ones in ``current``'s order. The index is
    ``index`` itself when no ad was added or dropped. Raises ``ValueError`` for an empty or
    duplicated ``current`` and for embeddings not of the index's dimension; reads ``live`` and
    ``index`` only.
    """
    import faiss

    ids = current["ad_id"]
    if len(ids) == 0:
        raise ValueError("the current ads table is empty")
    row_of = {ad: j for j, ad in enumerate(ids.tolist())}
    if len(row_of) != len(ids):
        raise ValueError("the current ads table lists an ad twice")
    live_ids = live["ad_id"].tolist()
    kept = [i for i, ad in enumerate(live_ids) if ad in row_of]  # FAISS ids of the live index still listed
    indexed = set(live_ids)
    new = [j for j, ad in enumerate(ids.tolist()) if ad not in indexed]  # rows of ``current``
    embedded = new if ad_tower is not None else []
    order = np.array([row_of[live_ids[i]] for i in kept] + embedded, dtype=np.int64)
    ads = {name: values[order] for name, values in current.items()}
    dropped = tuple(live_ids[i] for i in sorted(set(range(len(live_ids))) - set(kept)))
    pending = tuple(ids[new].tolist()) if ad_tower is None else ()
    if not embedded and not dropped:
        return Merged(ads, index, (), (), pending)
    vectors = embed(ad_tower, current, np.array(embedded, dtype=np.int64), index.d) if embedded else None
    fresh = faiss.clone_index(index)
    if dropped:
        fresh.reset()
        if kept:
            fresh.add(np.ascontiguousarray(index.reconstruct_batch(np.array(kept, dtype=np.int64)), dtype=np.float32))
    if vectors is not None:
        fresh.add(vectors)
    if fresh.ntotal != len(order):
        raise AssertionError(f"the new index holds {fresh.ntotal} vectors for {len(order)} ads")
    return Merged(ads, fresh, tuple(ids[embedded].tolist()), dropped, pending)


def embed(ad_tower: AdTower | None, ads: AdsTable, rows: np.ndarray, dim: int) -> np.ndarray:
    """The ad tower's float32 embeddings ``(len(rows), dim)`` of the ads ``rows``, ``EMBED_BATCH`` at a time.

    Raises ``ValueError`` for embeddings of another dimension than the index's or not finite.
    """
    if ad_tower is None:
        raise ValueError("no ad tower to embed new ads with")
    inputs = {f.name: ads[f.name][rows] for f in tower_features("ad")}
    parts = []
    for start in range(0, len(rows), EMBED_BATCH):
        batch = {name: values[start : start + EMBED_BATCH] for name, values in inputs.items()}
        parts.append(np.reshape(np.asarray(ad_tower(batch), dtype=np.float32), (len(batch["ad_id"]), -1)))
    vectors = np.concatenate(parts)
    if vectors.shape != (len(rows), dim):
        raise ValueError(f"the ad tower gives embeddings of shape {vectors.shape[1:]}, the index holds {dim}")
    if not np.all(np.isfinite(vectors)):
        raise ValueError("the ad tower gives embeddings that are not finite")
    return np.ascontiguousarray(vectors)
