import numpy as np
import pandas as pd
import pytest

from models.features import BY_NAME, MODEL_FEATURES, numeric_features
from models.frames import BUCKETS_PER_VALUE, FeatureStats, compute_feature_stats, fill_defaults, hash_buckets
from models.inputs import Standardize, to_tensors


def test_fill_defaults_fills_nulls_and_casts_to_spec_dtypes():
    features = [BY_NAME[n] for n in ("user_id", "placement", "position", "user_clicks_7d")]
    raw = pd.DataFrame(
        {
            "user_id": [12, None],
            "placement": ["top", None],
            "position": [3.0, np.nan],
            "user_clicks_7d": [None, 2],
            "label": [1, 0],
        }
    )
    out = fill_defaults(raw, features)
    assert out["user_id"].tolist() == ["12", ""]
    assert out["placement"].tolist() == ["top", "feed"]
    assert out["position"].tolist() == [3, 1] and out["position"].dtype == np.int64
    assert out["user_clicks_7d"].tolist() == [0.0, 2.0] and out["user_clicks_7d"].dtype == np.float32
    assert out["label"].tolist() == [1, 0]
    assert raw["placement"].isna().sum() == 1  # the input is not modified


def test_fill_defaults_rejects_missing_columns():
    with pytest.raises(KeyError, match="placement"):
        fill_defaults(pd.DataFrame({"user_id": ["a"]}), [BY_NAME["user_id"], BY_NAME["placement"]])


def test_feature_stats_apply_log1p_where_the_spec_says_and_round_trip():
    columns = {f.name: np.array([0.0, 1.0, 3.0]) for f in numeric_features()}
    stats = compute_feature_stats(columns, numeric_features(), max_buckets=1024)
    assert set(stats.mean) == {f.name for f in numeric_features()}
    logs = np.log1p([0.0, 1.0, 3.0])
    assert stats.mean["user_clicks_7d"] == pytest.approx(logs.mean())  # log_norm
    assert stats.variance["user_clicks_7d"] == pytest.approx(logs.var())
    assert stats.mean["user_ctr_7d"] == pytest.approx(4.0 / 3.0)  # norm
    assert FeatureStats.from_dict(stats.to_dict()) == stats


def test_hash_buckets_are_powers_of_two_with_room_per_value_under_the_cap():
    assert BUCKETS_PER_VALUE == 64
    assert hash_buckets(1, 1 << 20) == 64
    assert hash_buckets(3, 1 << 20) == 256  # 64 buckets a value, rounded up
    assert hash_buckets(100, 1 << 20) == 8192
    assert hash_buckets(10_000, 1 << 20) == 1 << 20
    assert hash_buckets(10_000, 50_000) == 50_000


def test_feature_stats_size_each_categorical_from_its_distinct_values():
    columns = {"placement": np.array(["feed", "story", "feed"]), "user_id": np.array([f"u{i}" for i in range(1000)])}
    stats = compute_feature_stats(columns, [BY_NAME["placement"], BY_NAME["user_id"]], max_buckets=1 << 20)
    assert stats.buckets == {"placement": 128, "user_id": 65_536}


def test_feature_stats_reject_nan():
    with pytest.raises(ValueError, match="fill_defaults"):
        compute_feature_stats({"user_ctr_7d": np.array([np.nan])}, [BY_NAME["user_ctr_7d"]], max_buckets=1024)


def test_standardize_handles_constant_features_and_negative_counts_column_by_column():
    constant = np.array([[2.0], [5.0]], dtype=np.float32)
    counts = np.array([[-4], [3]], dtype=np.int64)  # an int64 input is cast; a negative count is clipped to 0
    out = Standardize(mean=[2.0, 0.0], variance=[0.0, 4.0], log=[False, True])([constant, counts])
    np.testing.assert_allclose(np.asarray(out), [[0.0, 0.0], [3.0, np.log(4.0) / 2.0]], rtol=1e-6)


def test_to_tensors_gives_one_column_per_feature_with_spec_dtype(frame):
    tensors = to_tensors(frame)
    assert list(tensors) == [f.name for f in MODEL_FEATURES]
    for f in MODEL_FEATURES:
        assert tensors[f.name].shape == (len(frame), 1)
        assert tensors[f.name].dtype.name == f.dtype
