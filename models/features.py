"""The feature spec: the single source of truth for Spark outputs, Feast views, model inputs and serving.

Every feature the ranker sees is declared here once. Spark feature jobs write the ``batch`` features
named here, ``feature_repo`` turns them into Feast views and services, the models build their
inputs (and in-model preprocessing) from it, and the service assembles requests from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["request", "batch"]
Dtype = Literal["string", "int64", "float32", "float64"]
Transform = Literal["hash", "log_norm", "norm"]
Entity = Literal["user", "ad", "advertiser", "user_category"]

WINDOWS_DAYS = (1, 7, 30)
# Beta prior (in impressions) that smooths CTRs of entities with few impressions towards a prior CTR.
CTR_PRIOR_IMPRESSIONS = 200.0
# The join key of (user, category) rows; its value is the ad's category, i.e. the ``CATEGORY_FEATURE`` of the ad.
CATEGORY_KEY = "category"
CATEGORY_FEATURE = "ad_category"
BID_FEATURE = "ad_bid"
# How often the user was shown the ad earlier the same UTC day (ad fatigue: a repeat is clicked less).
# Its one definition: the day's impressions with the same ``EXPOSURES_KEYS`` that come before this one
# in ``EXPOSURES_ORDER`` (time, then id: ties in time are broken the same way everywhere). Each engine
# counts it so: the join (Spark, a row number over the day's impression log), the skew report (pandas,
# over the day's served log) and the service (the frequency cap's counters of the day, which take the
# impressions in the order they are served; one request's impressions share a time but are of distinct
# ads, so its ties never change a count).
EXPOSURES_FEATURE = "user_ad_impressions_today"
EXPOSURES_KEYS = ("user_id", "ad_id")
EXPOSURES_ORDER = ("ts", "impression_id")


@dataclass(frozen=True)
class EntitySpec:
    """What identifies the rows of one entity's feature view and how its click statistics are computed.

    keys: the join-key columns of a row. Feast takes one join key per entity, so a view keyed by
    several columns has one Feast entity per column (``FEAST_ENTITIES``).
    windows: the days of its windowed statistics.
    ctr_prior: the entity whose CTR of the same window its CTR is smoothed towards (it must come
    earlier in ``ENTITIES`` and have every window of this one); None: the global CTR of the window.
    """

    keys: tuple[str, ...]
    windows: tuple[int, ...] = WINDOWS_DAYS
    ctr_prior: Entity | None = None


ENTITIES: dict[Entity, EntitySpec] = {
    "user": EntitySpec(("user_id",)),
    "ad": EntitySpec(("ad_id",)),
    "advertiser": EntitySpec(("advertiser_id",)),
    # The user's affinity to the ad's category. A user's few daily impressions spread over all
    # categories, so one day of a pair is mostly empty and adds nothing over 7 days (measured). A pair
    # with few impressions is smoothed towards the user's own CTR: the pair's CTR then says how this
    # category differs from the user's others. Only pairs with activity in 30 days have values: an
    # absent pair (the user has not been shown the category) takes the spec defaults, 0 like an
    # inactive user, which in a targeted system is itself a sign of low affinity.
    "user_category": EntitySpec(("user_id", CATEGORY_KEY), windows=(7, 30), ctr_prior="user"),
}
# The entities with batch features, in spec order (a CTR prior's entity before the entity that uses it).
FEATURE_ENTITIES: tuple[Entity, ...] = tuple(ENTITIES)
# Feast entities, one join key each, by name.
FEAST_ENTITIES: dict[str, str] = {
    "user": "user_id",
    "ad": "ad_id",
    "advertiser": "advertiser_id",
    "category": CATEGORY_KEY,
}


@dataclass(frozen=True)
class Feature:
    """One model input.

    kind: ``request`` values arrive with the impression/request (ids and context); ``batch`` values
    are computed daily by Spark and served by Feast for ``entity``.
    source: the raw field (request) or the attribute table / statistic that produces it (batch).
    transform: what the model does to it: ``hash`` to an embedding bucket, ``log_norm`` =
    standardised log1p, ``norm`` = standardised value.
    tower: which retrieval tower uses it (``user`` / ``ad``), or None.
    model_input: False for a feature that Spark, Feast and the service carry but no model takes.
    deepfm: False for an id that DeepFM's interactions (FM, DNN) leave out: its embedding would fit the
    id's own few rows, and its click history reaches them through the entity's windowed statistics.
    Its first-order weight is the baseline's, fitted with a tuned L2 penalty, in both models; the
    retrieval towers take it too.
    """

    name: str
    kind: Kind
    dtype: Dtype
    transform: Transform
    source: str
    default: str | int | float
    entity: Entity | None = None
    tower: Literal["user", "ad"] | None = None
    model_input: bool = True
    deepfm: bool = True

    @property
    def categorical(self) -> bool:
        return self.transform == "hash"

    @property
    def numpy_dtype(self) -> type:
        """The numpy dtype of its values: ``object`` (Python ``str``) for strings."""
        return object if self.dtype == "string" else np.dtype(self.dtype).type


def stat_name(entity: Entity, stat: Literal["impressions", "clicks", "ctr"], days: int) -> str:
    """The name of a windowed statistic of an entity, e.g. ``ad_impressions_30d``."""
    return f"{entity}_{stat}_{days}d"


def _windowed(entity: Entity, tower: Literal["user", "ad"] | None) -> list[Feature]:
    out: list[Feature] = []
    for days in ENTITIES[entity].windows:
        for stat, transform in (("impressions", "log_norm"), ("clicks", "log_norm"), ("ctr", "norm")):
            out.append(Feature(stat_name(entity, stat, days), "batch", "float32", transform, stat, 0.0, entity, tower))
    return out


def _build() -> tuple[Feature, ...]:
    request = [
        # Thousands of ids with a few dozen clicks each. In DeepFM their weights fitted their own rows
        # within an epoch, before the field crosses were learnt: validation loss rose after epoch 1.
        # Without them it falls to epoch 5 and holdout AUC rose 0.006 (LR: the same with or without).
        Feature("user_id", "request", "string", "hash", "impression.user_id", "", tower="user", deepfm=False),
        Feature("ad_id", "request", "string", "hash", "impression.ad_id", "", tower="ad", deepfm=False),
        Feature("advertiser_id", "request", "string", "hash", "impression.advertiser_id", "", tower="ad"),
        Feature("placement", "request", "string", "hash", "impression.placement", "feed"),
        Feature("position", "request", "int64", "hash", "impression.position", 1),
        Feature("device", "request", "string", "hash", "impression.device", "unknown"),
        Feature("os", "request", "string", "hash", "impression.os", "unknown"),
        Feature("country", "request", "string", "hash", "impression.country", "unknown"),
        Feature("hour", "request", "int64", "hash", "impression.ts", 0),
        Feature(EXPOSURES_FEATURE, "request", "int64", "log_norm", "impression.(user_id, ad_id) earlier that day", 0),
    ]
    attributes = [
        Feature("user_age_bucket", "batch", "string", "hash", "users.age_bucket", "unknown", "user", "user"),
        Feature("user_gender", "batch", "string", "hash", "users.gender", "unknown", "user", "user"),
        Feature("user_days_since_last_impression", "batch", "float32", "log_norm", "recency", 365.0, "user", "user"),
        Feature("ad_category", "batch", "string", "hash", "ads.category", "unknown", "ad", "ad"),
        Feature("ad_creative_type", "batch", "string", "hash", "ads.creative_type", "unknown", "ad", "ad"),
        Feature("ad_age_days", "batch", "float32", "log_norm", "ads.launch_ts", 0.0, "ad", "ad"),
        # The auction's bid, from the same feature files and store as everything else the service
        # uses. Never a pCTR input: a click estimate that moves with the bid would let an
        # advertiser buy a better estimate of its own ad, and GSP prices assume pCTR ignores bids.
        Feature(BID_FEATURE, "batch", "float64", "log_norm", "ads.bid", 0.0, "ad", model_input=False),  # money
    ]
    return tuple(
        request
        + attributes
        + _windowed("user", "user")
        + _windowed("ad", "ad")
        + _windowed("advertiser", None)
        + _windowed("user_category", None)  # depends on user and ad: no retrieval tower can see it
    )


FEATURES: tuple[Feature, ...] = _build()
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
# What the ranker and the baseline take, in spec order: the SavedModel's signature.
MODEL_FEATURES: tuple[Feature, ...] = tuple(f for f in FEATURES if f.model_input)


# The columns of a bundle's ads table, row i = FAISS id i: ids and every ad-side batch feature (the bid among them).
AD_TABLE_FEATURES: tuple[str, ...] = (
    "ad_id", "advertiser_id", *(f.name for f in FEATURES if f.entity in ("ad", "advertiser") and f.kind == "batch"),
)  # fmt: skip
AD_TABLE_COLUMNS = ("campaign_id", *AD_TABLE_FEATURES)


def request_features() -> list[Feature]:
    return [f for f in FEATURES if f.kind == "request"]


def batch_features(entity: Entity | None = None) -> list[Feature]:
    return [f for f in FEATURES if f.kind == "batch" and (entity is None or f.entity == entity)]


def tower_features(tower: Literal["user", "ad"]) -> list[Feature]:
    return [f for f in MODEL_FEATURES if f.tower == tower]


def numeric_features() -> list[Feature]:
    """The model inputs that are standardised (and so need training statistics)."""
    return [f for f in MODEL_FEATURES if not f.categorical]


# Feast feature services: the versioned feature sets each model is trained and served with (by entity views).
RANKER_SERVICE = "ranker_v1"
RETRIEVAL_SERVICE = "retrieval_v1"
FEATURE_SERVICES: dict[str, tuple[Entity, ...]] = {
    RANKER_SERVICE: ("user", "ad", "advertiser", "user_category"),
    RETRIEVAL_SERVICE: ("user", "ad"),
}
