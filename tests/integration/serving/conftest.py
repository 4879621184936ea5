"""A tiny real serving home: a bundle of untrained ``models/`` networks (the ad tower too), FAISS over 50 ads,
Feast with 4 users.

The bundle parts are built once per session (``bundle_parts``); ``publish`` copies them into a home
as a versioned bundle with a manifest and flips CURRENT, like ``jobs.publish``. Homes share one
Feast repo (symlinked), materialised with the features of yesterday (inside the TTL) of the users and
of some of their (user, category) pairs. ``redis_state`` gives a test its own key prefix on the
suite's redis-server (``make redis``) and removes its keys afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
import pytest

from core.bundle import MANIFEST, file_checksums
from core.config import PctrConfig, ServingConfig, TrainConfig, load_config
from core.io import write_json_atomic, write_text_atomic
from core.layout import Layout, feature_event_time, feature_window
from models.features import CATEGORY_KEY, FEATURE_ENTITIES, MODEL_FEATURES, Entity, Feature, batch_features

N_ADS = 50
N_ADVERTISERS = 10
USERS = ("u1", "u2", "u3", "u4")
# CURRENT is not followed unless a test asks for it: the others swap bundles with /admin/reload
SERVING = ServingConfig(
    retrieval_k=20, max_ads_per_advertiser=1, frequency_cap=2, reserve_price=0.05, watch_seconds=3600.0
)
TRAIN = TrainConfig(embedding_dim=4, max_hash_buckets=1024, hidden_units=(16, 8), retrieval_dim=8)
# slope 1, intercept 0 and no downsampling: the identity, i.e. the raw scores TF Serving would return
IDENTITY_CALIBRATOR = '{"method": "platt", "neg_rate": 1.0, "x": [], "y": [], "slope": 1.0, "intercept": 0.0}'


def spec_values(features: list[Feature], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Plausible raw values for ``features``: a few categories per string, small counts, CTRs in [0, 0.1]."""
    out: dict[str, np.ndarray] = {}
    for f in features:
        if f.dtype == "string":
            out[f.name] = np.array([f"{f.name}_{i}" for i in rng.integers(0, 5, n)], dtype=object)
        elif f.dtype == "int64":
            out[f.name] = rng.integers(0, 24, n)
        elif f.dtype == "float64":
            out[f.name] = rng.uniform(0.1, 2.0, n)
        elif f.name.endswith("impressions_30d"):
            out[f.name] = rng.choice([0.0, 50.0, 5000.0], n).astype(np.float32)  # some ads are new
        else:
            scale = 0.1 if "_ctr_" in f.name else 100.0
            out[f.name] = (scale * rng.random(n)).astype(np.float32)
    return out


def feature_table(
    entity: Entity, keys: pd.DataFrame, rng: np.random.Generator, ds: str, delay: dt.timedelta
) -> pd.DataFrame:
    """One entity's feature file of ``ds`` as build_features writes it; ``keys`` holds its key columns."""
    frame = keys.reset_index(drop=True).assign(**spec_values(batch_features(entity), len(keys), rng))
    ts = pd.Timestamp(feature_event_time(ds, delay)).as_unit("us")
    return frame.assign(event_timestamp=ts, created_timestamp=ts)


@pytest.fixture(scope="session")
def feature_day() -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


@pytest.fixture(scope="session")
def ads_table() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    advertiser_ids = np.array([f"adv{i % N_ADVERTISERS}" for i in range(N_ADS)], dtype=object)
    frame = pd.DataFrame(
        {
            "ad_id": np.array([f"a{i}" for i in range(N_ADS)], dtype=object),
            "advertiser_id": advertiser_ids,
            "campaign_id": np.char.add("c", (np.arange(N_ADS) // 2).astype(str)).astype(object),
        }
    )
    ad_side = [f for e in ("ad", "advertiser") for f in batch_features(e)]  # type: ignore[arg-type]
    frame = frame.assign(**spec_values(ad_side, N_ADS, rng))
    frame.loc[np.arange(N_ADS) % 10 == 9, "ad_bid"] = 0.02  # some under the reserve
    return frame


@pytest.fixture(scope="session")
def bundle_parts(tmp_path_factory: pytest.TempPathFactory, ads_table: pd.DataFrame) -> Path:
    """Every bundle file but the manifest, from untrained DeepFM and two-tower models."""
    import faiss

    from jobs.train_retrieval import build_index
    from models.calibration import Calibrator
    from models.deepfm import build_deepfm
    from models.export import export_saved_model
    from models.features import tower_features
    from models.frames import compute_feature_stats, fill_defaults
    from models.inputs import to_tensors
    from models.retrieval import build_two_tower, get_tower

    parts = tmp_path_factory.mktemp("bundle_parts")
    rng = np.random.default_rng(0)
    frame = fill_defaults(pd.DataFrame(spec_values(list(MODEL_FEATURES), 256, rng)))
    stats = compute_feature_stats({c: frame[c].to_numpy() for c in frame.columns}, max_buckets=TRAIN.max_hash_buckets)
    export_saved_model(build_deepfm(MODEL_FEATURES, stats, TRAIN), parts / "ranker")
    towers = build_two_tower(stats, TRAIN)
    export_saved_model(get_tower(towers, "user"), parts / "user_tower")
    export_saved_model(get_tower(towers, "ad"), parts / "ad_tower")  # embeds the ads a refresh finds new
    ad_features = tower_features("ad")
    ad_emb = np.asarray(get_tower(towers, "ad")(to_tensors(fill_defaults(ads_table, ad_features), ad_features)))
    faiss.write_index(build_index(ad_emb, "flat"), str(parts / "faiss.index"))
    ads_table.to_parquet(parts / "ads.parquet", index=False)
    (parts / "calibrator.json").write_text(Calibrator("platt", neg_rate=0.1, slope=1.2, intercept=-0.3).to_json())
    return parts


@pytest.fixture(scope="session")
def pair_keys(ads_table: pd.DataFrame) -> pd.DataFrame:
    """The (user, category) pairs with features: every user but the last with some of the ads' categories."""
    categories = sorted(ads_table["ad_category"].unique())
    pairs = [(u, c) for i, u in enumerate(USERS[:-1]) for c in categories[i % 2 :: 2]]
    return pd.DataFrame(pairs, columns=["user_id", CATEGORY_KEY])


@pytest.fixture(scope="session")
def feast_repo(
    tmp_path_factory: pytest.TempPathFactory, ads_table: pd.DataFrame, pair_keys: pd.DataFrame, feature_day: str
) -> Path:
    """A Feast repo with the features of ``feature_day`` of USERS and of ``pair_keys`` materialised."""
    from feature_repo.definitions import view_name
    from feature_repo.store import feature_store

    home = tmp_path_factory.mktemp("feast_home")
    cfg = load_config(home=home)
    layout = Layout(cfg.home)
    rng = np.random.default_rng(2)
    keys = {
        "user": pd.DataFrame({"user_id": USERS}),
        "ad": ads_table[["ad_id"]],
        "advertiser": ads_table[["advertiser_id"]].drop_duplicates(),
        "user_category": pair_keys,
    }
    for entity in FEATURE_ENTITIES:
        layout.feature_files(entity, feature_day).mkdir(parents=True)
        feature_table(entity, keys[entity], rng, feature_day, cfg.feature_delay).to_parquet(
            layout.feature_files(entity, feature_day) / "part-0.parquet", index=False
        )
    store = feature_store(cfg, apply=True)
    start, end = feature_window(feature_day, cfg.feature_delay)
    store.materialize(start_date=start, end_date=end, feature_views=[view_name("user"), view_name("user_category")])
    return layout.feast_repo


@pytest.fixture(scope="session")
def pair_table(feast_repo: Path, feature_day: str) -> pd.DataFrame:
    """The materialised (user, category) features, indexed by (user_id, category)."""
    path = Layout(feast_repo.parent).feature_files("user_category", feature_day)
    return pd.read_parquet(path).set_index(["user_id", CATEGORY_KEY])


@pytest.fixture(scope="session")
def make_home(tmp_path_factory: pytest.TempPathFactory, feast_repo: Path) -> Callable[..., PctrConfig]:
    """``(**serving overrides) -> cfg`` of a fresh home sharing the session's Feast repo."""

    def make(**serving: object) -> PctrConfig:
        home = tmp_path_factory.mktemp("home")
        (home / "feast").symlink_to(feast_repo, target_is_directory=True)
        return load_config(home=home, serving=SERVING.model_copy(update=serving))

    return make


@pytest.fixture(scope="session")
def publish(bundle_parts: Path) -> Callable[..., Path]:
    """``(cfg, version, model_version, calibrator=None) -> bundle``: copy parts, write the manifest, flip CURRENT."""

    def run(cfg: PctrConfig, version: str, model_version: str, calibrator: str | None = None) -> Path:
        layout = Layout(cfg.home)
        bundle = layout.bundles / version
        shutil.copytree(bundle_parts, bundle)
        if calibrator is not None:
            (bundle / "calibrator.json").write_text(calibrator)
        manifest = {
            "version": version,
            "model_version": model_version,
            "tf_serving_version": int(model_version),
            "feature_service": "ranker_v1",
            "checksums": file_checksums(bundle),
        }
        write_json_atomic(bundle / MANIFEST, manifest)
        write_text_atomic(layout.current_pointer, version + "\n")
        return bundle

    return run


def wait_ready(get: Callable[[str], object], timeout_s: float = 60.0) -> None:
    """Poll ``/readyz`` through ``get`` (a TestClient's or httpx's) until it answers 200."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if get("/readyz").status_code == 200:  # type: ignore[attr-defined]
            return
        time.sleep(0.1)
    raise TimeoutError(f"not ready within {timeout_s} s: {get('/readyz').json()}")  # type: ignore[attr-defined]


@contextmanager
def running_server(app: object) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def redis_state() -> Iterator[ServingConfig]:
    """Serving settings with Redis state under a key prefix of this test's own; its keys go afterwards."""
    import redis

    port = os.environ.get("PCTR_TEST_REDIS_PORT", "6390")
    serving = SERVING.model_copy(
        update={
            "state": "redis",
            "redis_url": f"redis://127.0.0.1:{port}/0",
            "redis_key_prefix": f"pctr-test:{os.getpid()}:{uuid.uuid4().hex}",
        }
    )
    client = redis.Redis.from_url(serving.redis_url)
    try:
        yield serving
    finally:
        keys = list(client.scan_iter(match=f"{serving.redis_key_prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="session")
def users() -> tuple[str, ...]:
    return USERS


@pytest.fixture(scope="session")
def identity_calibrator() -> str:
    return IDENTITY_CALIBRATOR


@pytest.fixture(scope="session")
def instances(ads_table: pd.DataFrame) -> list[dict[str, object]]:
    """TF-Serving-API instances: ids and context, a few batch features, some as one-element lists, some missing."""
    rows = ads_table.head(5)
    return [
        {
            "user_id": ["u1"] if i % 2 else "u1",
            "ad_id": ad.ad_id,
            "advertiser_id": [ad.advertiser_id],
            "placement": "stories",
            "hour": i,
            "ad_ctr_7d": float(ad.ad_ctr_7d),
            **({"user_days_since_last_impression": 3.5} if i else {}),
        }
        for i, ad in enumerate(rows.itertuples())
    ]


@pytest.fixture(scope="session")
def expected_pctr(instances: list[dict[str, object]]) -> Callable[[Path], np.ndarray]:
    """``bundle -> pCTRs`` of ``instances`` by the bundle's Predictor (what evaluation uses)."""
    from models.frames import fill_defaults
    from models.predictor import Predictor

    def run(bundle: Path) -> np.ndarray:
        rows = [{k: v[0] if isinstance(v, list) else v for k, v in row.items()} for row in instances]
        filled = fill_defaults(pd.DataFrame.from_records(rows, columns=[f.name for f in MODEL_FEATURES]))
        predictor = Predictor.load(bundle / "ranker", bundle / "calibrator.json")
        return predictor.predict({f.name: filled[f.name].to_numpy() for f in MODEL_FEATURES})

    return run


@pytest.fixture(scope="session")
def server() -> Callable[[object], AbstractContextManager[str]]:
    return running_server


@pytest.fixture(scope="session")
def ready() -> Callable[..., None]:
    return wait_ready
