"""Candidate generation: the user tower's embedding -> FAISS top-K, and exploration of new ads.

Both return rows of the served ads table (``serving.ads``; row i = FAISS id i).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from models.features import BID_FEATURE, CTR_PRIOR_IMPRESSIONS, ENTITIES, stat_name
from serving.ads import AdsTable

UserTower = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # user features -> the user's embedding


class Retrieval:
    """The ``k`` ads nearest the user's embedding in the FAISS index (inner product or L2, as the index was built)."""

    def __init__(self, user_tower: UserTower, index: Any, k: int) -> None:
        self._user_tower = user_tower
        self._index = index
        self.k = k

    @property
    def index(self) -> Any:
        """The FAISS index searched; never written once searched (a refresh builds a new one)."""
        return self._index

    def with_index(self, index: Any) -> Retrieval:
        """The same user tower and ``k`` over another index (a refreshed one)."""
        return Retrieval(self._user_tower, index, self.k)

    def candidates(self, user_id: str, user: Mapping[str, Any]) -> np.ndarray:
        """Ads-table rows of the ``k`` ads nearest the user's embedding, nearest first.

        ``user`` holds the user's batch features (the user tower's inputs besides ``user_id``).
        """
        embedding = self._user_tower(
            {"user_id": np.array([user_id], dtype=object), **{k: [v] for k, v in user.items()}}
        )
        query = np.ascontiguousarray(np.reshape(embedding, (1, -1)), dtype=np.float32)
        _, ids = self._index.search(query, min(self.k, self._index.ntotal))
        return ids[0][ids[0] >= 0]  # an HNSW index may return fewer than k (padded with -1)


def new_ads(ads: AdsTable, reserve: float) -> np.ndarray:
    """Rows of the new ads: a smoothed CTR still mostly the prior (what exploration is for), a bid >= the reserve."""
    impressions = ads[stat_name("ad", "impressions", max(ENTITIES["ad"].windows))]
    return np.flatnonzero((impressions < CTR_PRIOR_IMPRESSIONS) & (ads[BID_FEATURE] >= reserve))


class Exploration:
    """Epsilon-greedy exploration: now and then one random new ad joins the candidates.

    Retrieval and the ranker rarely pick an ad that has few impressions yet; exploration lets the
    auction place it (``serving.auction.explore``) so that its statistics can grow.
    """

    def __init__(self, new_ads: np.ndarray, epsilon: float, rng: np.random.Generator) -> None:
        self.new_ads = new_ads
        self.epsilon = epsilon
        self._rng = rng

    def with_new_ads(self, new_ads: np.ndarray) -> Exploration:
        """The same epsilon and random generator over the new ads of another ads table (a refreshed one)."""
        return Exploration(new_ads, self.epsilon, self._rng)

    def pick(self) -> int | None:
        """With probability ``epsilon`` the row of a random new ad, else None (and no random draw if it cannot pick)."""
        if self.epsilon <= 0 or len(self.new_ads) == 0:
            return None
        if self._rng.random() >= self.epsilon:
            return None
        return int(self._rng.choice(self.new_ads))


def with_explored(rows: np.ndarray, explored: int | None) -> np.ndarray:
    """The candidates ``rows`` with the explored row appended, unless there is none or it is already among them."""
    if explored is not None and explored not in rows:
        return np.append(rows, explored)
    return rows
