"""The skew report on a tiny hand-made home: two days of feature files in a real Feast repo, served logs
written with the service's own ``ServedLog`` in the shape of ``serving.served_log.impression_records``."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from analysis.skew_report import read_served_log, run
from core.config import PctrConfig, load_config
from core.io import read_json
from core.layout import Layout, day_bounds, feature_event_time
from models.features import (
    CATEGORY_FEATURE,
    CATEGORY_KEY,
    ENTITIES,
    EXPOSURES_FEATURE,
    FEATURE_ENTITIES,
    FEATURES,
    Entity,
    batch_features,
)
from serving.served_log import ServedLog

pytestmark = pytest.mark.integration

DAY1, DAY2, DAY3, DAY4 = "2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"
USERS = ["u1", "u2", "u3", "u4"]
# Ads' categories are drawn from ad_category_0..3; pairs cover some (user, category) combinations only.
PAIRS = [(u, f"ad_category_{c}") for u in USERS[:3] for c in range(3)]
KEYS: dict[str, dict[str, list[str]]] = {
    "user": {"user_id": USERS},
    "ad": {"ad_id": [f"a{i}" for i in range(6)]},
    "advertiser": {"advertiser_id": ["adv0", "adv1", "adv2"]},
    "user_category": {"user_id": [u for u, _ in PAIRS], CATEGORY_KEY: [c for _, c in PAIRS]},
}
STALE = "user_ctr_7d"


def _feature_table(entity: Entity, ds: str, rng: np.random.Generator, delay: dt.timedelta) -> pd.DataFrame:
    """One entity's feature file of ds as build_features writes it (spec columns, spec types, event times)."""
    columns: dict[str, object] = dict(KEYS[entity])
    n = len(next(iter(KEYS[entity].values())))
    for f in batch_features(entity):
        if f.dtype == "string":
            columns[f.name] = [f"{f.name}_{i}" for i in rng.integers(0, 4, n)]
        else:
            columns[f.name] = (100 * rng.random(n)).astype(np.float32)
    ts = pd.Timestamp(feature_event_time(ds, delay)).as_unit("us")
    return pd.DataFrame(columns).assign(event_timestamp=ts, created_timestamp=ts)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[PctrConfig, dict[str, dict[str, pd.DataFrame]]]:
    """A home with the feature files of DAY1 and DAY2 registered in Feast (nothing materialised)."""
    from feature_repo.store import feature_store

    cfg = load_config(home=tmp_path_factory.mktemp("home"))
    layout = Layout(cfg.home)
    tables: dict[str, dict[str, pd.DataFrame]] = {}
    for seed, ds in enumerate((DAY1, DAY2)):
        rng = np.random.default_rng(seed)
        tables[ds] = {}
        for entity in FEATURE_ENTITIES:
            table = _feature_table(entity, ds, rng, cfg.feature_delay)
            layout.feature_files(entity, ds).mkdir(parents=True)
            table.to_parquet(layout.feature_files(entity, ds) / "part-0.parquet", index=False)
            tables[ds][entity] = table.set_index(list(ENTITIES[entity].keys))
    feature_store(cfg, apply=True)
    return cfg, tables


def _served_features(cfg: PctrConfig, features_of: dict[str, pd.DataFrame], ids: dict[str, str], now: dt.datetime,
                     context: dict[str, str]) -> dict[str, object]:  # fmt: skip
    """The ranker's inputs: request values, then batch values from ``features_of`` (spec defaults if unknown).

    The user's exposures to the ad today are left at 0 for ``write_log`` to count.
    """
    values: dict[str, object] = {**ids, **context, "position": cfg.serving.default_position, "hour": now.hour}
    values[EXPOSURES_FEATURE] = 0
    for f in batch_features():  # the ad's category comes before the pair features that it keys
        table = features_of[f.entity]  # type: ignore[index]
        keys = {**ids, CATEGORY_KEY: values.get(CATEGORY_FEATURE)}
        key = tuple(keys[k] for k in ENTITIES[f.entity].keys)  # type: ignore[index]
        key = key if len(key) > 1 else key[0]
        value = table.at[key, f.name] if key in table.index else f.default
        values[f.name] = value.item() if isinstance(value, np.generic) else value
    return {f.name: values[f.name] for f in FEATURES}


def write_log(cfg: PctrConfig, ds: str, features_of: dict[str, pd.DataFrame], n: int,
              stale: dict[int, dict[str, pd.DataFrame]] | None = None,
              restart_at: int | None = None) -> None:  # fmt: skip
    """n impressions of ds, three per request, as the service logs them; row i in ``stale``
    was served ``STALE`` from other feature tables. Requests cycle through the users and two blocks of ads,
    so from the 11th request on users see ads again. The service restarts before impression ``restart_at``:
    its frequency-cap counts start from zero again."""
    context = {"placement": "feed", "device": "mobile", "os": "ios", "country": "US"}
    log = ServedLog(Layout(cfg.home).served_log)
    exposures: Counter[tuple[str, str]] = Counter()  # the service's frequency-cap counts
    users = [*USERS, "u_new"]  # u_new: cold start, served the spec defaults
    for start in range(0, n, 3):
        if start == restart_at:
            exposures.clear()
        # after the previous day's features exist: served and offline values are then of the same day
        now = day_bounds(ds)[0] + cfg.feature_delay + dt.timedelta(hours=start // 3, minutes=7, seconds=1.5)
        records = []
        for i in range(start, min(start + 3, n)):
            ad = i % len(KEYS["ad"]["ad_id"])
            ids = {"user_id": users[start // 3 % len(users)], "ad_id": f"a{ad}", "advertiser_id": f"adv{ad % 3}"}
            served = _served_features(cfg, features_of, ids, now, context)
            if stale and i in stale:
                served[STALE] = _served_features(cfg, stale[i], ids, now, context)[STALE]
            served[EXPOSURES_FEATURE] = exposures[ids["user_id"], ids["ad_id"]]
            exposures[ids["user_id"], ids["ad_id"]] += 1
            records.append({
                "impression_id": f"{ds}-{i}", "request_id": f"{ds}-r{start}",
                "ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                **ids, "campaign_id": "c1", **context, "position": 1 + i - start, "bid": 0.5, "price": 0.3,
                "explore": False, "model_version": "3", "bundle_version": "v1", "pctr_served": 0.02,
                "served_features": served,
            })  # fmt: skip
        log.write(records, dt.date.fromisoformat(ds))


def test_served_features_equal_to_offline_report_no_skew(home: tuple) -> None:
    cfg, tables = home
    write_log(cfg, DAY2, tables[DAY1], n=33)  # impressions of DAY2 see DAY1's features

    stats = run(cfg, DAY2)

    assert stats["rows_compared"] == 33
    assert set(stats["features"]) == {f.name for f in FEATURES}
    assert {name: v["mismatches"] for name, v in stats["features"].items() if v["mismatches"]} == {}
    assert all(v["example"] is None and v["mismatch_rate"] == 0.0 for v in stats["features"].values())
    assert stats["features"]["hour"]["kind"] == "request" and stats["features"][STALE]["kind"] == "batch"
    assert stats["max_batch_mismatch_rate"] == 0.0
    assert read_json(Layout(cfg.home).stage_output("skew_report", DAY2) / "_stats.json") == stats
    served = served_values(cfg, DAY2, "user_category_ctr_30d")
    assert 0 < served.count(0.0) < len(served)  # known pairs and absent ones (spec default) were both compared
    assert stats["features"][EXPOSURES_FEATURE]["mismatches"] == 0
    assert max(served_values(cfg, DAY2, EXPOSURES_FEATURE)) == 1  # repeated (user, ad) impressions were compared too


def served_values(cfg: PctrConfig, ds: str, name: str) -> list:
    """One served feature's values in the served log of ds."""
    log, _ = read_served_log(cfg, ds)
    return [features[name] for features in log["served_features"]]


def test_stale_feature_shows_its_share_of_rows(home: tuple) -> None:
    cfg, tables = home
    stale_rows = {0, 4, 7}
    write_log(cfg, DAY3, tables[DAY2], n=10, stale={i: tables[DAY1] for i in stale_rows})
    path = next((Layout(cfg.home).served_log / f"dt={DAY3}").glob("*.jsonl"))
    with open(path, "a") as handle:
        handle.write('{"impression_id": "torn", "ts": "2026-11-2')  # a line cut short by a crash

    stats = run(cfg, DAY3)

    assert stats["rows_compared"] == 10 and stats["malformed_lines"] == 1
    skewed = stats["features"][STALE]
    assert skewed["mismatches"] == 3 and skewed["mismatch_rate"] == pytest.approx(0.3)
    assert stats["max_batch_mismatch_rate"] == pytest.approx(0.3)
    example = skewed["example"]
    assert example["impression_id"] == f"{DAY3}-0"
    assert example["served"] == pytest.approx(float(tables[DAY1]["user"].at[example["user_id"], STALE]))
    assert example["expected"] == pytest.approx(float(tables[DAY2]["user"].at[example["user_id"], STALE]))
    others = {name: v["mismatches"] for name, v in stats["features"].items() if name != STALE}
    assert set(others.values()) == {0}


def test_missing_served_log_is_a_clear_error(home: tuple) -> None:
    cfg, _ = home
    with pytest.raises(FileNotFoundError, match=r"no served log for ds=2026-11-19: .*served.*pctr serve"):
        run(cfg, "2026-11-19")


def test_exposure_counts_lost_by_a_restarted_service_show_as_skew(home: tuple) -> None:
    cfg, tables = home
    write_log(cfg, DAY4, tables[DAY2], n=33, restart_at=30)  # request 10 repeats request 0's ads to u1

    stats = run(cfg, DAY4)

    assert max(served_values(cfg, DAY4, EXPOSURES_FEATURE)) == 0
    assert stats["features"][EXPOSURES_FEATURE]["mismatches"] == 3
    assert stats["features"][EXPOSURES_FEATURE]["example"]["expected"] == 1
    assert stats["max_batch_mismatch_rate"] == 0.0
