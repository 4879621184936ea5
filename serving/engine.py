"""The ranking engine of one serving bundle: the request's steps, composed.

A request goes: the user's batch features (``serving.request_features``) -> user tower -> FAISS
top-K, plus now and then a new ad to explore (``serving.retrieval``) -> the ranker's batch, one row
per candidate (``serving.request_features``) -> calibrated pCTR, in process or from TF Serving
(``serving.scoring``) -> frequency cap (``serving.frequency_cap``), reserve, advertiser diversity and
GSP auction (``serving.auction``) -> served log and frequency counts (``serving.served_log``).

The ads table and the FAISS index over it (row i = FAISS id i) are the bundle's until ``refresh_ads``
merges the current ads into them (``serving.fresh_ads``); the pair and the steps built on it are one
immutable ``AdSide``, swapped by one assignment: a request reads it once and sees one consistent pair.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.bundle import verify
from models.features import BID_FEATURE, EXPOSURES_FEATURE
from serving.ads import AdsTable, load_ads
from serving.auction import ecpm, explore, run_auction
from serving.frequency_cap import FrequencyCap, frequency_cap
from serving.fresh_ads import AdTower, Merged, merge_ads
from serving.request_features import OnlineFeatures, RequestFeatures
from serving.retrieval import Exploration, Retrieval, new_ads, with_explored
from serving.scoring import Scorer, load_scorer, score_instances
from serving.served_log import ServedLog, impression_records

if TYPE_CHECKING:
    from core.config import PctrConfig, ServingConfig

# The bundle's ad tower (a SavedModel, ad-tower features in, the ad's embedding out), if it was published with one.
AD_TOWER = "ad_tower"


def published_at(manifest: Mapping[str, Any]) -> float | None:
    """The bundle's publish time (its manifest's ``created_at``) in epoch seconds, or None if it has none."""
    try:
        return dt.datetime.fromisoformat(str(manifest["created_at"])).timestamp()
    except (KeyError, ValueError):  # an age to report is no reason to refuse a bundle
        return None


@dataclass(frozen=True)
class AdSide:
    """The served ads table, the FAISS index over it (in ``retrieval``) and the steps built on them, and their ages.

    ``ads_at``: when the table's values were read (a refresh, or the bundle's publish); ``index_at``: when
    the index last held every listed ad (a refresh that left none pending, or the bundle's publish).
    Both are epoch seconds.
    """

    ads: AdsTable
    features: RequestFeatures
    retrieval: Retrieval
    exploration: Exploration
    ads_at: float
    index_at: float


class RankingEngine:
    """A loaded bundle answering rank and predict requests; thread-safe. Build it with ``RankingEngine.load``.

    The frequency cap and the served log belong to the process, not the bundle: pass the same ones
    to every engine so that a reload keeps the counts. ``frequency`` must be the cap ``features``
    reads the counts from: the engine records what it serves there. ``ad_tower`` embeds the ads a
    refresh finds new (None: they wait); ``built_at`` is when the bundle's table and index were made
    (epoch seconds; default now).
    """

    def __init__(
        self, *, manifest: Mapping[str, Any], ads: AdsTable, features: RequestFeatures, retrieval: Retrieval,
        exploration: Exploration, scorer: Scorer, cfg: ServingConfig, frequency: FrequencyCap, served_log: ServedLog,
        ad_tower: AdTower | None = None, built_at: float | None = None,
    ) -> None:  # fmt: skip
        if cfg.max_ads_per_advertiser < 1:
            raise ValueError(f"max_ads_per_advertiser must be >= 1, got {cfg.max_ads_per_advertiser}")
        self.version = str(manifest["version"])
        self.model_version = str(manifest["model_version"])
        self.cfg = cfg
        built_at = time.time() if built_at is None else built_at
        self.side = AdSide(ads, features, retrieval, exploration, ads_at=built_at, index_at=built_at)
        self.scorer = scorer
        self.ad_tower = ad_tower
        self._frequency = frequency
        self._served_log = served_log
        self._refresh_lock = threading.Lock()

    # The live side's parts; a request reads ``side`` once instead, so that a refresh cannot change them under it.
    @property
    def ads(self) -> AdsTable:
        return self.side.ads

    @property
    def features(self) -> RequestFeatures:
        return self.side.features

    @property
    def retrieval(self) -> Retrieval:
        return self.side.retrieval

    @property
    def exploration(self) -> Exploration:
        return self.side.exploration

    @classmethod
    def load(
        cls, bundle: Path, cfg: PctrConfig, *, frequency: FrequencyCap | None = None,
        served_log: ServedLog | None = None, rng: np.random.Generator | None = None,
    ) -> RankingEngine:  # fmt: skip
        """Verify the bundle's checksums, load its parts, open Feast, and run one request to warm up.

        Raises ``ValueError`` for a bundle that does not match its manifest (a torn or tampered
        copy) and whatever Feast raises if its registry lacks the user view.
        """
        import faiss

        from core.layout import Layout
        from feature_repo.store import feature_store
        from models.export import load_serving_fn

        manifest = verify(bundle)
        scorer = load_scorer(bundle, cfg.serving.tf_serving_url)
        index = faiss.read_index(str(bundle / "faiss.index"))
        user_tower = load_serving_fn(bundle / "user_tower")
        # only a refreshing service embeds ads; a bundle published without an ad tower leaves new ads pending
        refreshing = cfg.serving.ads_refresh_seconds > 0 and (bundle / AD_TOWER).is_dir()
        ad_tower = load_serving_fn(bundle / AD_TOWER) if refreshing else None
        ads = load_ads(bundle / "ads.parquet", index.ntotal)
        online = OnlineFeatures(feature_store(cfg))
        frequency = frequency or frequency_cap(cfg.serving)
        rng = rng or np.random.default_rng()
        engine = cls(
            manifest=manifest,
            ads=ads,
            features=RequestFeatures(online, ads, frequency, cfg.serving.default_position),
            retrieval=Retrieval(user_tower, index, cfg.serving.retrieval_k),
            exploration=Exploration(new_ads(ads, cfg.serving.reserve_price), cfg.serving.exploration_epsilon, rng),
            scorer=scorer,
            cfg=cfg.serving,
            frequency=frequency,
            served_log=served_log or ServedLog(Layout(cfg.home).served_log),
            ad_tower=ad_tower,
            built_at=published_at(manifest),
        )
        engine.warm_up()
        return engine

    def refresh_ads(self, current: AdsTable, now: float | None = None) -> Merged:
        """Serve the ``current`` ads table (``serving.fresh_ads.CurrentAds``) from now on, new ads embedded
        into a new index; ``now``: epoch seconds of the read (default now).

        Builds the new table, index and steps aside and swaps them in by one assignment; whatever
        raises on the way leaves the live ones serving. Returns what changed.
        """
        now = time.time() if now is None else now
        with self._refresh_lock:  # one merge at a time: each builds on the side the last one left
            side = self.side
            merged = merge_ads(side.ads, side.retrieval.index, current, self.ad_tower)
            self.side = AdSide(
                ads=merged.ads,
                features=side.features.with_ads(merged.ads),
                retrieval=side.retrieval.with_index(merged.index),
                exploration=side.exploration.with_new_ads(new_ads(merged.ads, self.cfg.reserve_price)),
                ads_at=now,
                index_at=side.index_at if merged.pending else now,
            )
            return merged

    def warm_up(self) -> None:
        """Make the first, slow calls of the SavedModels, FAISS and Feast before any user waits on them.

        Serves nothing: nothing is logged or counted.
        """
        side = self.side
        user, _ = side.features.user("")
        now = dt.datetime.now(dt.UTC)
        rows = side.retrieval.candidates("", user)
        self.scorer.predict(side.features.columns("", user, {}, now, rows, side.features.per_candidate("", rows, now)))

    def rank(
        self, user_id: str, context: Mapping[str, Any], slots: int, request_id: str | None = None,
        request_time: dt.datetime | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Rank ads for ``slots`` slots; logs and counts the impressions it returns.

        ``request_time`` (timezone-aware; default now) is when the request was made; the engine trusts it,
        while the HTTP service takes one from a client in replay mode only.

        With probability ``exploration_epsilon`` a random new ad (fewer impressions than the CTR
        prior) joins the candidates and, if the rules allow, takes the last slot at the reserve.
        The response's ``timings_ms`` has the milliseconds of each step and the ``total``.
        """
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        request_id = request_id or uuid.uuid4().hex
        now = dt.datetime.now(dt.UTC) if request_time is None else request_time.astimezone(dt.UTC)
        timings: dict[str, float] = {}
        started = last = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal last
            timings[phase] = round(1000.0 * (time.perf_counter() - last), 3)
            last = time.perf_counter()

        side = self.side  # one (ads table, index) pair for the whole request, whatever a refresh swaps in meanwhile
        user, known = side.features.user(user_id)
        lap("features")
        rows = side.retrieval.candidates(user_id, user)
        candidates = len(rows)
        explored = side.exploration.pick()
        rows = with_explored(rows, explored)
        lap("retrieval")
        per_candidate = side.features.per_candidate(user_id, rows, now)
        lap("pair_features")
        columns = side.features.columns(user_id, user, context, now, rows, per_candidate)
        pctr = self.scorer.predict(columns)
        lap("scoring")
        bids, advertisers = side.ads[BID_FEATURE][rows], columns["advertiser_id"]
        allowed = self._frequency.allowed(per_candidate[EXPOSURES_FEATURE])
        rules = {"reserve": self.cfg.reserve_price, "max_per_advertiser": self.cfg.max_ads_per_advertiser}
        placements = run_auction(pctr, bids, advertisers, allowed, slots=slots, **rules)
        if explored is not None:
            candidate = int(np.flatnonzero(rows == explored)[0])
            placements = explore(placements, candidate, bids, advertisers, allowed, slots=slots, **rules)
        lap("auction")
        records = impression_records(
            request_id=request_id, now=now, columns=columns, pctr=pctr, placements=placements,
            campaign_ids=side.ads["campaign_id"][rows], bids=bids, model_version=self.model_version,
            bundle_version=self.version,
        )  # fmt: skip
        self._served_log.write(records, now.date())
        self._frequency.record(user_id, [columns["ad_id"][p.index] for p in placements], now.date())
        lap("log")
        timings["total"] = round(1000.0 * (time.perf_counter() - started), 3)
        ads = [
            {
                "ad_id": columns["ad_id"][p.index],
                "advertiser_id": columns["advertiser_id"][p.index],
                "slot": p.slot,
                "pctr": float(pctr[p.index]),
                "ecpm": float(ecpm(bids[p.index], pctr[p.index])),
                "price": p.price,
                "bid": float(bids[p.index]),
                "explore": p.explore,
            }
            for p in placements
        ]
        return {
            "request_id": request_id,
            "user_id": user_id,
            "model_version": self.model_version,
            "bundle_version": self.version,
            "cold_start": not known,
            "ads": ads,
            "candidates": candidates,
            "timings_ms": timings,
        }

    def predict(self, instances: Sequence[Mapping[str, Any]]) -> list[float]:
        """Calibrated pCTRs of rows of raw spec-named features (missing ones take the spec defaults)."""
        return score_instances(self.scorer, instances)
