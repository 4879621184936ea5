"""The request's features: the ranker's batch of one request, one row per candidate ad.

Where each value comes from:
- the user's batch features: Feast online (``OnlineFeatures.user``; spec defaults for a user it does
  not know: cold start);
- the (user, category) batch features of each candidate's category: Feast online, one read for the
  candidates' distinct categories (``OnlineFeatures.pairs``);
- the ad and advertiser features: the served ads table in memory (``serving.ads``: the bundle's, or the
  current ads read from Feast online by the last refresh, ``serving.fresh_ads``);
- the request's context (placement, device, ...): the request, spec defaults for what it leaves out;
- what the server sets: the slot the model scores every ad at (position bias), the hour of the
  request and the user's impressions of each candidate today (the frequency cap's counts).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.features import (
    AD_TABLE_FEATURES,
    BY_NAME,
    CATEGORY_FEATURE,
    CATEGORY_KEY,
    ENTITIES,
    EXPOSURES_FEATURE,
    RANKER_SERVICE,
    Entity,
    batch_features,
    request_features,
)
from serving.ads import AdsTable
from serving.frequency_cap import FrequencyCap

USER_BATCH = tuple(batch_features("user"))
# Per candidate too, but from Feast: the (user, category) statistics of the candidate's category.
PAIR_BATCH = tuple(batch_features("user_category"))
# Request features set by the server: the slot the model scores every ad at (position bias), the hour
# and the user's impressions of each candidate today (the frequency cap's counts).
SERVER_SIDE = ("position", "hour", EXPOSURES_FEATURE)
# Whatever other request feature the spec declares comes with the request's context.
CONTEXT = tuple(f for f in request_features() if f.name not in {"user_id", *AD_TABLE_FEATURES, *SERVER_SIDE})


class OnlineFeatures:
    """The user's and its (user, category) batch features from a Feast store's online store; thread-safe.

    ``store`` is a ``feast.FeatureStore`` whose registry holds the user and (user, category) views (and the
    ad and advertiser views, for ``entities``).
    """

    def __init__(self, store: Any) -> None:
        from feature_repo.definitions import service_refs

        self._store = store
        # the ranker's feature service decides what is read, as it does for training; a request's ad side
        # comes from the served ads table, which only a refresh reads from here (``entities``)
        self._user_refs = service_refs(RANKER_SERVICE, "user")
        self._pair_refs = service_refs(RANKER_SERVICE, "user_category")
        # Feast's sqlite store shares one connection between threads; reads are ~0.4 ms, so serialise them.
        self._lock = threading.Lock()

    def user(self, user_id: str) -> tuple[dict[str, Any], bool]:
        """The user's batch features (spec defaults where Feast has none) and whether Feast knew the user."""
        with self._lock:
            found = self._store.get_online_features(
                features=self._user_refs, entity_rows=[{"user_id": user_id}]
            ).to_dict()
        values = {f.name: found[f.name][0] for f in USER_BATCH}
        known = any(v is not None for v in values.values())
        return {f.name: f.default if values[f.name] is None else values[f.name] for f in USER_BATCH}, known

    def pairs(self, user_id: str, categories: np.ndarray) -> dict[str, np.ndarray]:
        """The (user, category) features of each of ``categories`` (spec defaults where Feast has none).

        One online read for the distinct categories, broadcast back to them: a few entity rows
        instead of one per candidate.
        """
        distinct, of_row = np.unique(categories, return_inverse=True)
        entity_rows = [{"user_id": user_id, CATEGORY_KEY: category} for category in distinct.tolist()]
        with self._lock:
            found = self._store.get_online_features(features=self._pair_refs, entity_rows=entity_rows).to_dict()
        columns = {}
        for f in PAIR_BATCH:
            values = [f.default if v is None else v for v in found[f.name]]
            columns[f.name] = np.asarray(values, dtype=f.numpy_dtype)[of_row]
        return columns

    def entities(
        self, entity: Entity, keys: Sequence[str], chunk: int = 1000
    ) -> tuple[dict[str, list[Any]], np.ndarray]:
        """The online values of ``entity``'s features in the ranker's service for each of ``keys`` (None where
        Feast has none), and whether Feast knew each key (any value at all).

        For the views of one join key (ad, advertiser) and many keys: read ``chunk`` keys at a time, so
        that no single read holds the lock long when requests share the store.
        """
        from feature_repo.definitions import service_refs

        refs = service_refs(RANKER_SERVICE, entity)
        (key,) = ENTITIES[entity].keys
        names = [f.name for f in batch_features(entity)]
        values: dict[str, list[Any]] = {name: [] for name in names}
        for start in range(0, len(keys), chunk):
            rows = [{key: k} for k in keys[start : start + chunk]]
            with self._lock:
                found = self._store.get_online_features(features=refs, entity_rows=rows).to_dict()
            for name in names:
                values[name].extend(found[name])
        known = np.array([any(values[n][i] is not None for n in names) for i in range(len(keys))], dtype=bool)
        return values, known


def request_values(
    user_id: str, user: Mapping[str, Any], context: Mapping[str, Any], now: dt.datetime, position: int
) -> dict[str, Any]:
    """The values shared by every candidate of a request: ids, the user's batch features, context, slot, hour.

    ``position`` is the slot the model scores every ad at; ``now`` (UTC) gives the hour. Context
    values that are missing or None take the spec defaults.
    """
    values: dict[str, Any] = {"user_id": user_id, "position": position, "hour": now.hour, **user}
    for f in CONTEXT:
        value = context.get(f.name)
        values[f.name] = f.default if value is None else value
    return values


def candidate_columns(
    ads: AdsTable, rows: np.ndarray, request: Mapping[str, Any], per_candidate: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The ranker's batch: one row per candidate ads-table row, ``request`` values broadcast in the spec's dtypes.

    Each candidate's ad-side features come from ``ads``; ``per_candidate`` holds the values that
    differ by candidate but depend on the user (see ``RequestFeatures.per_candidate``).
    """
    columns = {name: ads[name][rows] for name in AD_TABLE_FEATURES} | dict(per_candidate)
    for name, value in request.items():
        columns[name] = np.full(len(rows), value, dtype=BY_NAME[name].numpy_dtype)
    return columns


class RequestFeatures:
    """Builds the ranker's batch of a request from Feast, the ads table, the request and the frequency cap.

    ``frequency`` is the process's cap (the engine records served impressions in it);
    ``default_position`` is the slot the model scores every ad at.
    """

    def __init__(self, online: OnlineFeatures, ads: AdsTable, frequency: FrequencyCap, default_position: int) -> None:
        self.online = online
        self.ads = ads
        self.frequency = frequency
        self.default_position = default_position

    def with_ads(self, ads: AdsTable) -> RequestFeatures:
        """The same steps over another ads table (a refreshed one)."""
        return RequestFeatures(self.online, ads, self.frequency, self.default_position)

    def user(self, user_id: str) -> tuple[dict[str, Any], bool]:
        """The user's batch features and whether Feast knew the user (``OnlineFeatures.user``)."""
        return self.online.user(user_id)

    def per_candidate(self, user_id: str, rows: np.ndarray, now: dt.datetime) -> dict[str, np.ndarray]:
        """The candidates' values that depend on the user: pair features and the user's impressions of each today."""
        seen = self.frequency.seen(user_id, self.ads["ad_id"][rows], now.date())
        return {**self.online.pairs(user_id, self.ads[CATEGORY_FEATURE][rows]), EXPOSURES_FEATURE: seen}

    def columns(
        self, user_id: str, user: Mapping[str, Any], context: Mapping[str, Any], now: dt.datetime, rows: np.ndarray,
        per_candidate: Mapping[str, np.ndarray],
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """The ranker's batch for the candidates ``rows`` (``per_candidate``: from ``per_candidate``)."""
        request = request_values(user_id, user, context, now, self.default_position)
        return candidate_columns(self.ads, rows, request, per_candidate)
