"""The frequency cap: an ad is not shown to a user who was served it ``cap`` times today (UTC).

``FrequencyCap`` holds the rule; ``ImpressionCounts`` is where the day's impressions per (user, ad)
are kept: ``InProcessCounts`` in this process's memory, bounded; ``RedisCounts`` in Redis, shared by
every worker and replica. ``frequency_cap`` picks one by ``serving.state``.
"""

from __future__ import annotations

import datetime as dt
import threading
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import redis

if TYPE_CHECKING:
    from core.config import ServingConfig

# How long a day's Redis counts outlive the day (or their last impression, for a day counted after it
# ended): requests in flight at midnight, and replicas whose clocks differ a little, still find them.
KEY_GRACE = dt.timedelta(hours=1)


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


class RedisCounts:
    """The impressions of each UTC day in Redis, shared by every process whose counts use the same ``prefix``.

    One hash per (day, user), ``<prefix>:<day>:<user_id>``, holds the count of each ad served. A key
    expires ``grace`` after its day ends, or after the last impression counted in it if that is later
    (a replay's day, served after it ended): memory holds about a day's users, and nothing needs reset.

    Unlike ``InProcessCounts``, each day keeps its own counts, so there is no latest day to move back:
    a request of an earlier day (in flight at midnight, or a replay's straggler) is capped by, and
    counted in, the impressions of its own day while that day's keys live, and never touches today's.
    """

    def __init__(self, client: redis.Redis, prefix: str, grace: dt.timedelta = KEY_GRACE) -> None:
        self.prefix = prefix
        self.grace = grace
        self._client = client

    @classmethod
    def connect(cls, url: str, prefix: str, timeout_s: float) -> RedisCounts:
        """Counts in the Redis at ``url``; raises ``ConnectionError`` naming it if it does not answer a ping."""
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            client.ping()
        except redis.RedisError as err:
            client.close()
            raise ConnectionError(f"frequency-cap state: no Redis answers at {redacted(url)}: {err}") from err
        return cls(client, prefix)

    def key(self, user_id: str, day: dt.date) -> str:
        return f"{self.prefix}:{day.isoformat()}:{user_id}"

    def expires_at(self, day: dt.date) -> dt.datetime:
        """When the counts of ``day`` go, if an impression of it is counted now."""
        end_of_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return max(end_of_day, dt.datetime.now(dt.UTC)) + self.grace

    def seen(self, user_id: str, ad_ids: Sequence[str], day: dt.date) -> np.ndarray:
        if len(ad_ids) == 0:  # HMGET needs a field
            return np.zeros(0, dtype=np.int64)
        counts = self._client.hmget(self.key(user_id, day), list(ad_ids))
        return np.fromiter((int(c or 0) for c in counts), dtype=np.int64, count=len(ad_ids))

    def record(self, user_id: str, ad_ids: Sequence[str], day: dt.date) -> None:
        if len(ad_ids) == 0:
            return
        key = self.key(user_id, day)
        # MULTI/EXEC: a key is never left without its expiry, which would keep it for ever
        with self._client.pipeline(transaction=True) as pipe:
            for ad_id, n in Counter(ad_ids).items():
                pipe.hincrby(key, ad_id, n)
            pipe.pexpireat(key, self.expires_at(day))
            pipe.execute()


def redacted(url: str) -> str:
    """``url`` with its password, if any, masked: error messages and logs show it."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


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
    """The configured cap over the configured counts (``cfg.state``).

    With ``memory``, the counts are this process's: with several replicas, a user can see an ad up to
    ``cap`` times per replica. With ``redis``, Redis must answer now (``ConnectionError`` otherwise),
    so that a service fails as it starts rather than on its first request.
    """
    if cfg.state == "redis":
        counts: ImpressionCounts = RedisCounts.connect(cfg.redis_url, cfg.redis_key_prefix, cfg.redis_timeout_seconds)
    else:
        counts = InProcessCounts(cfg.frequency_cap_max_users)
    return FrequencyCap(cfg.frequency_cap, counts)
