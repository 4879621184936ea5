"""The ranking engine of one serving bundle: retrieval, scoring, rules, auction and the served log.

A request goes: user batch features from Feast online (spec defaults for a user it does not know:
cold start) -> user tower -> FAISS top-K -> the user's (user, category) features from Feast online
for the candidates' categories -> the ranker's batch (per-request features from the request, the
server clock and Feast; ad and advertiser features from the ads table held in memory, row i = FAISS
id i; pair features by each candidate's category) -> calibrated pCTR -> frequency cap, reserve,
advertiser diversity and GSP auction (``serving.auction``) -> served log. The ranker runs in
process (the bundle's SavedModel) or, with ``cfg.serving.tf_serving_url``, in TF Serving behind its
REST API.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.bundle import verify
from models.features import (
    AD_TABLE_COLUMNS,
    AD_TABLE_FEATURES,
    BID_FEATURE,
    BY_NAME,
    CATEGORY_FEATURE,
    CATEGORY_KEY,
    CTR_PRIOR_IMPRESSIONS,
    ENTITIES,
    EXPOSURES_FEATURE,
    FEATURES,
    MODEL_FEATURES,
    batch_features,
    request_features,
    stat_name,
)
from serving.auction import FrequencyCap, Placement, ecpm, explore, run_auction
from serving.served_log import ServedLog

if TYPE_CHECKING:
    from core.config import PctrConfig, ServingConfig
    from models.calibration import Calibrator

MODEL_NAME = "pctr"  # the model's name in the TF Serving REST API
FEATURE_NAMES = tuple(f.name for f in FEATURES)  # what the served log records: the model inputs and the bid
INPUT_NAMES = tuple(f.name for f in MODEL_FEATURES)  # the SavedModel's signature
USER_BATCH = tuple(batch_features("user"))
# Per candidate too, but from Feast: the (user, category) statistics of the candidate's category.
PAIR_BATCH = tuple(batch_features("user_category"))
# Request features set by the server: the slot the model scores every ad at (position bias), the hour
# and the user's impressions of each candidate today (the frequency cap's counts).
SERVER_SIDE = ("position", "hour", EXPOSURES_FEATURE)
# Whatever other request feature the spec declares comes with the request's context.
CONTEXT = tuple(f for f in request_features() if f.name not in {"user_id", *AD_TABLE_FEATURES, *SERVER_SIDE})


class Scorer(Protocol):
    """Calibrated pCTR of rows given as spec-named columns (``models.predictor.Predictor`` is one)."""

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray: ...


class RemoteRanker:
    """The ranker behind TF Serving's REST API, with the calibrator applied here.

    TF Serving serves the bundle's ``ranker/`` SavedModel, whose outputs are raw scores. Instances
    go in TF Serving's row format, each value a one-element list: the signature's inputs are
    ``(None, 1)``.
    """

    def __init__(self, url: str, calibrator: Calibrator, timeout_s: float = 5.0) -> None:
        import httpx

        self.url = f"{url.rstrip('/')}/v1/models/{MODEL_NAME}:predict"
        self.calibrator = calibrator
        self._client = httpx.Client(timeout=timeout_s)

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        values = {name: np.asarray(columns[name]).tolist() for name in INPUT_NAMES}
        n = len(values[INPUT_NAMES[0]])
        instances = [{name: [values[name][i]] for name in INPUT_NAMES} for i in range(n)]
        response = self._client.post(self.url, json={"instances": instances})
        if response.status_code != 200:
            raise RuntimeError(f"TF Serving at {self.url} answered {response.status_code}: {response.text[:500]}")
        scores = np.asarray(response.json()["predictions"], dtype=np.float64).reshape(n)
        return self.calibrator.predict(scores)


def load_ads(path: Path, index_size: int) -> dict[str, np.ndarray]:
    """The ads table as numpy columns (spec defaults filled): ad-side features (the bid among them), campaign_id."""
    import pandas as pd

    from models.inputs import as_strings, fill_defaults

    table = pd.read_parquet(path)
    missing = [c for c in AD_TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}")
    if len(table) != index_size:
        raise ValueError(f"{path} has {len(table)} rows but the FAISS index {index_size}: row i must be FAISS id i")
    bids = table[BID_FEATURE].to_numpy(np.float64)
    if not np.all(np.isfinite(bids) & (bids >= 0)):
        raise ValueError(f"{path}: bids must be finite and >= 0")
    filled = fill_defaults(table, [BY_NAME[name] for name in AD_TABLE_FEATURES])
    columns = {name: filled[name].to_numpy() for name in AD_TABLE_FEATURES}
    columns["campaign_id"] = as_strings(table["campaign_id"].fillna("").to_numpy())
    return columns


class RankingEngine:
    """A loaded bundle answering rank and predict requests; thread-safe. Build it with ``RankingEngine.load``.

    The frequency cap and the served log belong to the process, not the bundle: pass the same ones
    to every engine so that a reload keeps the counts.
    """

    def __init__(
        self, *, manifest: Mapping[str, Any], user_tower: Callable[[Mapping[str, np.ndarray]], np.ndarray],
        index: Any, ads: dict[str, np.ndarray], scorer: Scorer, store: Any, cfg: ServingConfig,
        frequency: FrequencyCap, served_log: ServedLog, rng: np.random.Generator,
    ) -> None:  # fmt: skip
        from feature_repo.definitions import view_name

        if cfg.max_ads_per_advertiser < 1:
            raise ValueError(f"max_ads_per_advertiser must be >= 1, got {cfg.max_ads_per_advertiser}")
        self.version = str(manifest["version"])
        self.model_version = str(manifest["model_version"])
        self.cfg = cfg
        self.ads = ads
        self._user_tower = user_tower
        self._index = index
        self._scorer = scorer
        self._store = store
        self._user_refs = [f"{view_name('user')}:{f.name}" for f in USER_BATCH]
        self._pair_refs = [f"{view_name('user_category')}:{f.name}" for f in PAIR_BATCH]
        # Feast's sqlite store shares one connection between threads; reads are ~0.4 ms, so serialise them.
        self._store_lock = threading.Lock()
        self._frequency = frequency
        self._served_log = served_log
        self._rng = rng
        # Ads whose smoothed CTR is still mostly the prior: what exploration is for.
        self._new_ads = np.flatnonzero(
            (ads[stat_name("ad", "impressions", max(ENTITIES["ad"].windows))] < CTR_PRIOR_IMPRESSIONS)
            & (ads[BID_FEATURE] >= cfg.reserve_price)
        )

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
        from models.calibration import Calibrator
        from models.export import load_serving_fn
        from models.predictor import Predictor

        manifest = verify(bundle)
        calibrator = Calibrator.from_json((bundle / "calibrator.json").read_text())
        url = cfg.serving.tf_serving_url
        scorer: Scorer = RemoteRanker(url, calibrator) if url else Predictor(bundle / "ranker", calibrator)
        index = faiss.read_index(str(bundle / "faiss.index"))
        engine = cls(
            manifest=manifest,
            user_tower=load_serving_fn(bundle / "user_tower"),
            index=index,
            ads=load_ads(bundle / "ads.parquet", index.ntotal),
            scorer=scorer,
            store=feature_store(cfg),
            cfg=cfg.serving,
            frequency=frequency or FrequencyCap(cfg.serving.frequency_cap),
            served_log=served_log or ServedLog(Layout(cfg.home).served_log),
            rng=rng or np.random.default_rng(),
        )
        engine._warm_up()
        return engine

    def _warm_up(self) -> None:
        """Make the first, slow calls of the SavedModels, FAISS and Feast before any user waits on them."""
        user, _ = self.user_features("")
        now = dt.datetime.now(dt.UTC)
        rows = self.retrieve("", user)
        self._scorer.predict(
            self._columns(self._request_values("", user, {}, now), rows, self._per_user("", rows, now))
        )

    def user_features(self, user_id: str) -> tuple[dict[str, Any], bool]:
        """The user's batch features (spec defaults where Feast has none) and whether Feast knew the user."""
        with self._store_lock:
            found = self._store.get_online_features(
                features=self._user_refs, entity_rows=[{"user_id": user_id}]
            ).to_dict()
        values = {f.name: found[f.name][0] for f in USER_BATCH}
        known = any(v is not None for v in values.values())
        return {f.name: f.default if values[f.name] is None else values[f.name] for f in USER_BATCH}, known

    def pair_features(self, user_id: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The (user, category) features of each candidate ads-table row (spec defaults where Feast has none).

        One online read for the distinct categories among the candidates, broadcast back to them: a
        few entity rows instead of one per candidate.
        """
        categories, of_row = np.unique(self.ads[CATEGORY_FEATURE][rows], return_inverse=True)
        entity_rows = [{"user_id": user_id, CATEGORY_KEY: category} for category in categories.tolist()]
        with self._store_lock:
            found = self._store.get_online_features(features=self._pair_refs, entity_rows=entity_rows).to_dict()
        columns = {}
        for f in PAIR_BATCH:
            values = [f.default if v is None else v for v in found[f.name]]
            columns[f.name] = np.asarray(values, dtype=f.numpy_dtype)[of_row]
        return columns

    def retrieve(self, user_id: str, user: Mapping[str, Any]) -> np.ndarray:
        """Ads-table rows of the ``retrieval_k`` ads nearest the user's embedding, nearest first."""
        embedding = self._user_tower(
            {"user_id": np.array([user_id], dtype=object), **{k: [v] for k, v in user.items()}}
        )
        query = np.ascontiguousarray(np.reshape(embedding, (1, -1)), dtype=np.float32)
        _, ids = self._index.search(query, min(self.cfg.retrieval_k, self._index.ntotal))
        return ids[0][ids[0] >= 0]  # an HNSW index may return fewer than k (padded with -1)

    def _request_values(
        self, user_id: str, user: Mapping[str, Any], context: Mapping[str, Any], now: dt.datetime
    ) -> dict[str, Any]:
        values: dict[str, Any] = {"user_id": user_id, "position": self.cfg.default_position, "hour": now.hour, **user}
        for f in CONTEXT:
            value = context.get(f.name)
            values[f.name] = f.default if value is None else value
        return values

    def _per_user(self, user_id: str, rows: np.ndarray, now: dt.datetime) -> dict[str, np.ndarray]:
        """The candidates' values that depend on the user: pair features and the user's impressions of each today."""
        seen = self._frequency.seen(user_id, self.ads["ad_id"][rows], now.date())
        return {**self.pair_features(user_id, rows), EXPOSURES_FEATURE: seen}

    def _columns(
        self, request: Mapping[str, Any], rows: np.ndarray, per_user: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The ranker's batch: one row per candidate (``per_user``: see ``_per_user``), per-request values broadcast."""
        columns = {name: self.ads[name][rows] for name in AD_TABLE_FEATURES} | dict(per_user)
        for name, value in request.items():
            columns[name] = np.full(len(rows), value, dtype=BY_NAME[name].numpy_dtype)
        return columns

    def rank(
        self, user_id: str, context: Mapping[str, Any], slots: int, request_id: str | None = None,
        request_time: dt.datetime | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Rank ads for ``slots`` slots; logs and counts the impressions it returns.

        ``request_time`` (timezone-aware; default now) is when the request was made.

        With probability ``exploration_epsilon`` a random new ad (fewer impressions than the CTR
        prior) joins the candidates and, if the rules allow, takes the last slot at the reserve.
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

        user, known = self.user_features(user_id)
        lap("features")
        rows = self.retrieve(user_id, user)
        candidates = len(rows)
        lap("retrieval")
        explored = self._exploration_row()
        if explored is not None and explored not in rows:
            rows = np.append(rows, explored)
        per_user = self._per_user(user_id, rows, now)
        lap("pair_features")
        columns = self._columns(self._request_values(user_id, user, context, now), rows, per_user)
        pctr = self._scorer.predict(columns)
        lap("scoring")
        bids, advertisers = self.ads[BID_FEATURE][rows], columns["advertiser_id"]
        allowed = self._frequency.allowed(per_user[EXPOSURES_FEATURE])
        rules = {"reserve": self.cfg.reserve_price, "max_per_advertiser": self.cfg.max_ads_per_advertiser}
        placements = run_auction(pctr, bids, advertisers, allowed, slots=slots, **rules)
        if explored is not None:
            candidate = int(np.flatnonzero(rows == explored)[0])
            placements = explore(placements, candidate, bids, advertisers, allowed, slots=slots, **rules)
        lap("auction")
        self._record(request_id, user_id, now, rows, columns, pctr, placements)
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

    def _exploration_row(self) -> int | None:
        if self.cfg.exploration_epsilon <= 0 or len(self._new_ads) == 0:
            return None
        if self._rng.random() >= self.cfg.exploration_epsilon:
            return None
        return int(self._rng.choice(self._new_ads))

    def _record(
        self, request_id: str, user_id: str, now: dt.datetime, rows: np.ndarray, columns: Mapping[str, np.ndarray],
        pctr: np.ndarray, placements: Sequence[Placement],
    ) -> None:  # fmt: skip
        """Log the served impressions with the exact features scored, and count them for the frequency cap."""
        ts = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        records = []
        for p in placements:
            features = {name: _json_value(columns[name][p.index]) for name in FEATURE_NAMES}
            records.append(
                {
                    "impression_id": uuid.uuid4().hex,
                    "request_id": request_id,
                    "ts": ts,
                    **{k: features[k] for k in ("user_id", "ad_id", "advertiser_id")},
                    "campaign_id": self.ads["campaign_id"][rows[p.index]],
                    **{f.name: features[f.name] for f in CONTEXT},
                    "position": p.slot,
                    "bid": float(self.ads[BID_FEATURE][rows[p.index]]),
                    "price": p.price,
                    "explore": p.explore,
                    "model_version": self.model_version,
                    "bundle_version": self.version,
                    "pctr_served": float(pctr[p.index]),
                    "served_features": features,
                }
            )
        self._served_log.write(records, now.date())
        self._frequency.record(user_id, [columns["ad_id"][p.index] for p in placements], now.date())

    def predict(self, instances: Sequence[Mapping[str, Any]]) -> list[float]:
        """Calibrated pCTRs of rows of raw spec-named features (missing ones take the spec defaults)."""
        import pandas as pd

        from models.inputs import fill_defaults

        filled = fill_defaults(pd.DataFrame.from_records(list(instances), columns=list(INPUT_NAMES)))
        return self._scorer.predict({name: filled[name].to_numpy() for name in INPUT_NAMES}).tolist()


def _json_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
