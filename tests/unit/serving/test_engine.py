"""The engine composed of tiny real steps: FAISS over 12 ads, a sqlite Feast store, the auction, a served log.

The ranker is a stand-in in the ``Scorer`` protocol whose pCTR is a known function of the batch.
"""

import datetime as dt
import json

import numpy as np
import pytest

from models.features import EXPOSURES_FEATURE, FEATURES, MODEL_FEATURES

PHASES = ("features", "retrieval", "pair_features", "scoring", "auction", "log")
NOW = dt.datetime(2026, 11, 20, 9, 15, tzinfo=dt.UTC)


class AdCtrScorer:
    """pCTR = the ad's 7-day CTR + 0.01; keeps the last batch it scored."""

    batch: dict[str, np.ndarray] = {}

    def predict(self, columns):
        self.batch = dict(columns)
        return 0.01 + np.asarray(columns["ad_ctr_7d"], dtype=np.float64)


def axis_tower(inputs):
    """Every user looks along axes 1-3 (ads of adv1-adv3), never along axis 0 (the new ads, all of adv0)."""
    return np.array([[0.0, 1.0, 0.8, 0.6]], dtype=np.float32)


@pytest.fixture
def make_engine(build_engine):
    return lambda **serving: build_engine(axis_tower, AdCtrScorer(), **serving)


def served(tmp_path) -> list[dict]:
    paths = sorted(tmp_path.glob("served/dt=*/*.jsonl"))
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def test_rank_fills_the_slots_by_ecpm_from_the_retrieved_candidates(tiny, make_engine):
    engine = make_engine()
    result = engine.rank(tiny.KNOWN_USER, {"device": "ios"}, 3, request_id="r1", request_time=NOW)
    assert {k: result[k] for k in ("request_id", "user_id", "model_version", "bundle_version", "cold_start")} == {
        "request_id": "r1", "user_id": tiny.KNOWN_USER, "model_version": "7", "bundle_version": "v1",
        "cold_start": False,
    }  # fmt: skip
    assert result["candidates"] == 8
    assert set(result["timings_ms"]) == {*PHASES, "total"}
    ads = result["ads"]
    assert [a["slot"] for a in ads] == [1, 2, 3]
    assert [a["ecpm"] for a in ads] == sorted((a["ecpm"] for a in ads), reverse=True)
    assert {a["advertiser_id"] for a in ads} == {"adv1", "adv2", "adv3"}  # one each; adv0 was never retrieved
    for a in ads:
        row = int(a["ad_id"][1:])
        assert a["pctr"] == pytest.approx(0.01 + tiny.make_ads()["ad_ctr_7d"][row])
        assert a["ecpm"] == pytest.approx(1000.0 * a["bid"] * a["pctr"])
        assert tiny.RESERVE <= a["price"] <= a["bid"] and a["explore"] is False
    assert engine.rank("never-seen", {}, 1, request_time=NOW)["cold_start"] is True


def test_the_ranker_scores_a_batch_of_the_users_features_per_candidate(tiny, make_engine):
    engine = make_engine()
    engine.rank(tiny.KNOWN_USER, {"country": "FR"}, 2, request_time=NOW)
    batch = engine.scorer.batch
    assert {f.name for f in MODEL_FEATURES} <= set(batch)
    assert all(len(values) == 8 for values in batch.values())
    np.testing.assert_allclose(batch["user_ctr_7d"], tiny.USER_VALUE)
    assert set(batch["country"]) == {"FR"} and set(batch["hour"]) == {NOW.hour}
    categories = batch["ad_category"]
    expected = [tiny.PAIR_VALUES.get(c, 0.0) for c in categories]
    np.testing.assert_allclose(batch["user_category_ctr_30d"], expected)
    assert set(categories) - set(tiny.PAIR_VALUES)  # some candidates' categories have no pair features


def test_served_ads_are_logged_as_scored_and_counted_for_the_frequency_cap(tmp_path, make_engine):
    engine = make_engine()
    first = engine.rank("u2", {}, 3, request_id="r1", request_time=NOW)
    records = served(tmp_path)
    assert [(r["request_id"], r["ad_id"], r["position"]) for r in records] == [
        ("r1", a["ad_id"], a["slot"]) for a in first["ads"]
    ]
    assert [(r["pctr_served"], r["price"], r["bid"]) for r in records] == [
        (a["pctr"], a["price"], a["bid"]) for a in first["ads"]
    ]
    assert all(list(r["served_features"]) == [f.name for f in FEATURES] for r in records)
    assert (tmp_path / "served" / f"dt={NOW.date()}").is_dir()

    second = engine.rank("u2", {}, 3, request_id="r2", request_time=NOW)
    shown = {a["ad_id"] for a in first["ads"]} & {a["ad_id"] for a in second["ads"]}
    logged = [r for r in served(tmp_path) if r["request_id"] == "r2"]
    exposures = {r["ad_id"]: r["served_features"][EXPOSURES_FEATURE] for r in logged}
    assert shown and all(exposures[ad] == 1 for ad in shown)
    third = engine.rank("u2", {}, 3, request_id="r3", request_time=NOW)
    assert not shown & {a["ad_id"] for a in third["ads"]}  # cap 2: shown twice, not again today


def test_a_request_dated_yesterday_keeps_todays_caps(tmp_path, make_engine):
    engine = make_engine()
    first, second = ({a["ad_id"] for a in engine.rank("u2", {}, 3, request_time=NOW)["ads"]} for _ in range(2))
    shown_twice = first & second
    assert shown_twice
    yesterday = NOW - dt.timedelta(days=1)
    assert engine.rank("u2", {}, 3, request_id="late", request_time=yesterday)["ads"]
    assert (tmp_path / "served" / f"dt={yesterday.date()}").is_dir()  # logged on its own day
    third = engine.rank("u2", {}, 3, request_time=NOW)
    assert not shown_twice & {a["ad_id"] for a in third["ads"]}  # still capped today


def test_exploration_gives_the_last_slot_to_a_new_ad_at_the_reserve(tiny, make_engine):
    engine = make_engine(exploration_epsilon=1.0)
    for i in range(5):
        result = engine.rank(f"explorer-{i}", {}, 3, request_time=NOW)
        assert result["candidates"] == 8  # the explored ad is not counted among the retrieved
        *paid, explored = result["ads"]
        assert explored["explore"] and int(explored["ad_id"][1:]) in tiny.NEW_ADS
        assert (explored["slot"], explored["price"]) == (3, tiny.RESERVE)
        assert not any(a["explore"] for a in paid)


def test_warming_up_serves_and_counts_nothing(tmp_path, make_engine):
    engine = make_engine()
    engine.warm_up()
    assert not (tmp_path / "served").exists()
    assert engine.rank("", {}, 1, request_time=NOW)["ads"][0]["ad_id"]  # the warm-up's user was not capped


def test_predict_scores_raw_instances_with_spec_defaults(make_engine):
    engine = make_engine()
    assert engine.predict([{"ad_ctr_7d": 0.25}, {}]) == pytest.approx([0.26, 0.01])


def test_an_advertiser_limit_under_one_is_refused(make_engine):
    with pytest.raises(ValueError, match="max_ads_per_advertiser must be >= 1"):
        make_engine(max_ads_per_advertiser=0)
