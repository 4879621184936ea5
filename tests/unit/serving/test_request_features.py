import datetime as dt

import numpy as np
import pytest

from models.features import AD_TABLE_FEATURES, BY_NAME, EXPOSURES_FEATURE, MODEL_FEATURES, batch_features
from serving.frequency_cap import FrequencyCap, InProcessCounts
from serving.request_features import (
    CONTEXT,
    OnlineFeatures,
    RequestFeatures,
    candidate_columns,
    request_values,
)

NOW = dt.datetime(2026, 11, 20, 17, 45, tzinfo=dt.UTC)
PAIR_NAMES = [f.name for f in batch_features("user_category")]


@pytest.fixture(scope="module")
def online(feast_store):
    return OnlineFeatures(feast_store)


def test_context_is_every_request_feature_the_server_does_not_set():
    assert [f.name for f in CONTEXT] == ["placement", "device", "os", "country"]


def test_a_known_users_features_come_from_feast(tiny, online):
    user, known = online.user(tiny.KNOWN_USER)
    assert known
    assert set(user) == {f.name for f in batch_features("user")}
    assert user["user_ctr_7d"] == pytest.approx(tiny.USER_VALUE)
    assert user["user_gender"] == "adult"


def test_an_unknown_user_gets_the_spec_defaults(online):
    user, known = online.user("never-seen")
    assert not known
    assert user == {f.name: f.default for f in batch_features("user")}


def test_pair_features_are_read_once_per_category_and_broadcast(tiny, online):
    categories = np.array(["food", "travel", "autos", "food"], dtype=object)
    columns = online.pairs(tiny.KNOWN_USER, categories)
    assert set(columns) == set(PAIR_NAMES)
    known = tiny.PAIR_VALUES
    expected = [known["food"], 0.0, known["autos"], known["food"]]  # (user, travel) is not in Feast: the default
    for name in PAIR_NAMES:
        np.testing.assert_allclose(columns[name], expected)
        assert columns[name].dtype == np.float32
    assert all((online.pairs("never-seen", categories)[name] == 0.0).all() for name in PAIR_NAMES)


def test_request_values_fill_missing_context_and_take_the_hour_of_the_request():
    values = request_values("u9", {"user_ctr_7d": 0.5}, {"device": "ios", "os": None}, NOW, position=2)
    assert values == {
        "user_id": "u9", "position": 2, "hour": 17, "user_ctr_7d": 0.5,
        "placement": "feed", "device": "ios", "os": "unknown", "country": "unknown",
    }  # fmt: skip


def test_candidate_columns_take_ad_features_by_row_and_broadcast_request_values(ads):
    rows = np.array([4, 0, 7])
    request = request_values("u9", {"user_ctr_7d": 0.5}, {}, NOW, position=1)
    per_candidate = {EXPOSURES_FEATURE: np.array([0, 2, 1])}
    columns = candidate_columns(ads, rows, request, per_candidate)
    assert columns["ad_id"].tolist() == ["a4", "a0", "a7"]
    np.testing.assert_array_equal(columns["ad_bid"], ads["ad_bid"][rows])
    assert columns[EXPOSURES_FEATURE].tolist() == [0, 2, 1]
    assert columns["user_id"].tolist() == ["u9"] * 3 and columns["user_id"].dtype == object
    assert columns["hour"].tolist() == [17] * 3 and columns["hour"].dtype == np.int64
    assert columns["user_ctr_7d"].dtype == np.float32
    assert set(AD_TABLE_FEATURES) <= set(columns)


def test_the_batch_has_every_model_input_with_the_users_pairs_and_exposures(tiny, online, ads):
    frequency = FrequencyCap(3, InProcessCounts(max_users=10))
    frequency.record(tiny.KNOWN_USER, ["a1", "a1", "a2"], NOW.date())
    features = RequestFeatures(online, ads, frequency, default_position=1)
    user, _ = features.user(tiny.KNOWN_USER)
    rows = np.array([1, 2, 3])  # categories food, travel, autos
    per_candidate = features.per_candidate(tiny.KNOWN_USER, rows, NOW)
    assert per_candidate[EXPOSURES_FEATURE].tolist() == [2, 1, 0]
    known = tiny.PAIR_VALUES
    np.testing.assert_allclose(per_candidate["user_category_ctr_7d"], [known["food"], 0.0, known["autos"]])
    columns = features.columns(tiny.KNOWN_USER, user, {"country": "FR"}, NOW, rows, per_candidate)
    assert {f.name for f in MODEL_FEATURES} <= set(columns)
    for name, values in columns.items():
        assert len(values) == len(rows), name
        assert values.dtype == np.dtype(BY_NAME[name].numpy_dtype), name
    assert columns["country"].tolist() == ["FR"] * 3
    np.testing.assert_allclose(columns["user_ctr_7d"], tiny.USER_VALUE)
    # another day's counts start from zero
    tomorrow = features.per_candidate(tiny.KNOWN_USER, rows, NOW + dt.timedelta(days=1))
    assert tomorrow[EXPOSURES_FEATURE].tolist() == [0, 0, 0]
