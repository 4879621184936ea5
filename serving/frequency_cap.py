"""The frequency cap: an ad is not shown to a user who was served it ``cap`` times today (UTC).

``FrequencyCap`` holds the rule; ``ImpressionCounts`` is where the day's impressions per (user, ad)
are kept. ``InProcessCounts`` keeps them in this process's memory, bounded; a store shared by
replicas (Redis) would implement the same two calls and be chosen in ``frequency_cap``.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from core.config import ServingConfig


class ImpressionCounts(Protocol):
    """The impressions per (user, ad) of a day."""

    def seen(self, user_id: str, ad_ids: Sequence[str], day: dt.date) -> np.ndarray:
        """How often ``user_id`` was served each of ``ad_ids`` on ``day`` so far (int64)."""
        ...

    def record(self, user_id: str, ad_ids: Sequence[str], day: dt.date) -> None:
        """Count one impression of each of ``ad_ids`` (repeats count again) for ``user_id`` on ``day``."""
        ...


class InProcessCounts:
    """The impressions of the latest day served, for at most ``max_users`` users; thread-safe.

    The day only moves forward. A request of an earlier day (one in flight at midnight, or a replay's
    straggler) neither reads nor records counts: the cap and the ranker's exposures feature count the
    impressions of one UTC day, so an earlier day's impressions must not cap today's ads, and that
    day's own counts were dropped when the day moved on. Such a request is served uncapped, which
    costs at most a few impressions, where rewinding the day would wipe every user's counts of today.

    Beyond ``max_users`` users in a day, the user served least recently is forgotten (they may see an
    ad up to ``cap`` more times that day), so that random user ids cannot grow memory without bound.
    """

    def __init__(self, max_users: int) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        self.max_users = max_users
        self._day: dt.date | None = None
        self._users: OrderedDict[str, Counter[str]] = OrderedDict()  # least recently served first
        self._lock = threading.Lock()

    def seen(self, user_id: str, ad_ids: Sequence[str], day: dt.date) -> np.ndarray:
        with self._lock:
            counts = self._users.get(user_id) if day == self._day else None
            if not counts:
                return np.zeros(len(ad_ids), dtype=np.int64)
            return np.fromiter((counts[a] for a in ad_ids), dtype=np.int64, count=len(ad_ids))

    def record(self, user_id: str, ad_ids: Sequence[str], day: dt.date) -> None:
        if len(ad_ids) == 0:  # nothing served: not worth a place among the users kept
            return
        with self._lock:
            if self._day is not None and day < self._day:
                return
            if day != self._day:
                self._day, self._users = day, OrderedDict()
            counts = self._users.setdefault(user_id, Counter())
            counts.update(ad_ids)
            self._users.move_to_end(user_id)
            if len(self._users) > self.max_users:
                self._users.popitem(last=False)


class FrequencyCap:
    """Impressions per (user, ad) served today (UTC); an ad is capped at ``cap`` of them.

    The counts are also the ranker's ``user_ad_impressions_today`` feature (ad fatigue), as the spec
    defines it (``models.features.EXPOSURES_FEATURE``): the day's earlier impressions of the (user, ad).
    Checking and recording are separate steps, so concurrent requests of one user may overshoot the
    cap a little.
    """

    def __init__(self, cap: int, counts: ImpressionCounts) -> None:
        if cap < 1:
            raise ValueError(f"frequency cap must be >= 1, got {cap}")
        self.cap = cap
        self._counts = counts

    def seen(self, user_id: str, ad_ids: Sequence[str], day: dt.date) -> np.ndarray:
        """How often ``user_id`` was served each of ``ad_ids`` on ``day`` so far (int64)."""
        return self._counts.seen(user_id, ad_ids, day)

    def allowed(self, seen: np.ndarray) -> np.ndarray:
        """Boolean mask of the ads that may still be shown, from their ``seen`` counts."""
        return seen < self.cap

    def record(self, user_id: str, ad_ids: Sequence[str], day: dt.date) -> None:
        """Count the impressions served to ``user_id`` on ``day``."""
        self._counts.record(user_id, ad_ids, day)


def frequency_cap(cfg: ServingConfig) -> FrequencyCap:
    """The configured cap over counts kept in this process: with several replicas, a user can see an ad
    up to ``cap`` times per replica."""
    return FrequencyCap(cfg.frequency_cap, InProcessCounts(cfg.frequency_cap_max_users))
