"""Tiny real parts of a serving bundle: an ads table of 12 ads, a FAISS index over them, a sqlite Feast store.

Ad i has the embedding ``AD_VECTORS[i]``; the user tower ``vector_tower`` returns the user's
``vector`` feature, so a test decides which ads retrieval finds. In the Feast store, ``KNOWN_USER``
has user features and (user, category) features for ``KNOWN_CATEGORIES`` only; every other user and
pair is unknown. Tests get these names from the ``tiny`` fixture.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.config import ServingConfig
from models.features import AD_TABLE_FEATURES, BY_NAME, CATEGORY_KEY, batch_features, stat_name
from serving.ads import AdsTable
from serving.engine import RankingEngine
from serving.frequency_cap import frequency_cap
from serving.request_features import OnlineFeatures, RequestFeatures
from serving.retrieval import Exploration, Retrieval, new_ads
from serving.served_log import ServedLog

N_ADS = 12
CATEGORIES = ("autos", "food", "travel")  # ad i is of CATEGORIES[i % 3]
NEW_ADS = (0, 4, 8)  # ads with fewer impressions than the CTR prior
UNDER_RESERVE = 5  # the ad whose bid is under RESERVE
RESERVE = 0.05
KNOWN_USER = "u1"
KNOWN_CATEGORIES = ("autos", "food")
USER_VALUE = 7.0  # every float user feature of KNOWN_USER in Feast
PAIR_VALUES = {"autos": 0.25, "food": 0.5}  # every (user, category) feature of KNOWN_USER in Feast
# Ad i points along axis i % 4, a little further for higher i: a user vector along an axis finds those ads.
AD_VECTORS = np.array([np.eye(4)[i % 4] * (1.0 + 0.01 * i) for i in range(N_ADS)], dtype=np.float32)


def make_ads() -> AdsTable:
    """The ads table: ids, four advertisers, categories, bids 0.5 + 0.1 i (one under the reserve), float stats."""
    rng = np.random.default_rng(0)
    ads: AdsTable = {}
    for name in AD_TABLE_FEATURES:
        feature = BY_NAME[name]
        if feature.dtype == "string":
            ads[name] = np.array([f"{name}_{i % 2}" for i in range(N_ADS)], dtype=object)
        else:
            ads[name] = rng.uniform(0.0, 0.1, N_ADS).astype(feature.numpy_dtype)
    ads["ad_id"] = np.array([f"a{i}" for i in range(N_ADS)], dtype=object)
    ads["advertiser_id"] = np.array([f"adv{i % 4}" for i in range(N_ADS)], dtype=object)
    ads["ad_category"] = np.array([CATEGORIES[i % 3] for i in range(N_ADS)], dtype=object)
    ads["ad_bid"] = 0.5 + 0.1 * np.arange(N_ADS, dtype=np.float64)
    ads["ad_bid"][UNDER_RESERVE] = 0.01
    impressions = np.full(N_ADS, 5000.0, dtype=np.float32)
    impressions[list(NEW_ADS)] = 50.0
    ads[stat_name("ad", "impressions", 30)] = impressions
    ads["campaign_id"] = np.array([f"c{i // 2}" for i in range(N_ADS)], dtype=object)
    return ads


@pytest.fixture(scope="session")
def tiny() -> SimpleNamespace:
    """This module's constants and helpers, by name."""
    names = ("N_ADS", "CATEGORIES", "NEW_ADS", "UNDER_RESERVE", "RESERVE", "KNOWN_USER", "KNOWN_CATEGORIES",
             "USER_VALUE", "PAIR_VALUES", "AD_VECTORS", "make_ads", "vector_tower")  # fmt: skip
    return SimpleNamespace(**{name: globals()[name] for name in names})


@pytest.fixture
def ads() -> AdsTable:
    return make_ads()


@pytest.fixture
def index():
    """A flat inner-product FAISS index of ``AD_VECTORS``: FAISS id i is ad i."""
    import faiss

    index = faiss.IndexFlatIP(AD_VECTORS.shape[1])
    index.add(AD_VECTORS)
    return index


def vector_tower(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """A user tower that embeds a user as its ``vector`` feature (a batch of one, as the service calls it)."""
    return np.asarray(inputs["vector"], dtype=np.float32)


def _feast_rows(keys: dict[str, list[str]], values: dict[str, list[object]]) -> pd.DataFrame:
    ts = pd.Timestamp(dt.datetime.now(dt.UTC)).floor("s")
    return pd.DataFrame({**keys, **values}).assign(event_timestamp=ts, created_timestamp=ts)


@pytest.fixture(scope="session")
def feast_store(tmp_path_factory: pytest.TempPathFactory):
    """A real Feast store on sqlite with the declarations of ``feature_repo``, features written online directly."""
    from core.config import load_config
    from feature_repo.definitions import view_name
    from feature_repo.store import feature_store

    store = feature_store(load_config(home=tmp_path_factory.mktemp("feast_home")), apply=True)
    user = {f.name: ["adult" if f.dtype == "string" else USER_VALUE] for f in batch_features("user")}
    store.write_to_online_store(view_name("user"), _feast_rows({"user_id": [KNOWN_USER]}, user))
    pairs = {f.name: [PAIR_VALUES[c] for c in KNOWN_CATEGORIES] for f in batch_features("user_category")}
    keys = {"user_id": [KNOWN_USER] * len(KNOWN_CATEGORIES), CATEGORY_KEY: list(KNOWN_CATEGORIES)}
    store.write_to_online_store(view_name("user_category"), _feast_rows(keys, pairs))
    return store


@pytest.fixture
def build_engine(index, feast_store, tmp_path):
    """``(user_tower, scorer, *, ad_tower, built_at, **serving) -> RankingEngine`` over the tiny ads, index and
    Feast store; ``serving`` overrides the tiny defaults of the configuration."""

    def build(user_tower, scorer, *, ad_tower=None, built_at=None, **serving) -> RankingEngine:
        defaults = {"retrieval_k": 8, "reserve_price": RESERVE, "frequency_cap": 2, "max_ads_per_advertiser": 1}
        cfg = ServingConfig(**defaults | serving)
        ads = make_ads()
        frequency = frequency_cap(cfg)
        return RankingEngine(
            manifest={"version": "v1", "model_version": "7"},
            ads=ads,
            features=RequestFeatures(OnlineFeatures(feast_store), ads, frequency, cfg.default_position),
            retrieval=Retrieval(user_tower, index, cfg.retrieval_k),
            exploration=Exploration(new_ads(ads, cfg.reserve_price), cfg.exploration_epsilon, np.random.default_rng(0)),
            scorer=scorer,
            cfg=cfg,
            frequency=frequency,
            served_log=ServedLog(tmp_path / "served"),
            ad_tower=ad_tower,
            built_at=built_at,
        )

    return build
