import numpy as np
import pandas as pd
import pytest

from models.features import BY_NAME, MODEL_FEATURES, numeric_features
from models.inputs import FeatureStats, Standardize, compute_feature_stats, fill_defaults, to_tensors


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
    stats = compute_feature_stats(columns)
    assert set(stats.mean) == {f.name for f in numeric_features()}
    logs = np.log1p([0.0, 1.0, 3.0])
    assert stats.mean["user_clicks_7d"] == pytest.approx(logs.mean())  # log_norm
    assert stats.variance["user_clicks_7d"] == pytest.approx(logs.var())
    assert stats.mean["user_ctr_7d"] == pytest.approx(4.0 / 3.0)  # norm
    assert FeatureStats.from_dict(stats.to_dict()) == stats


def test_feature_stats_reject_nan():
    with pytest.raises(ValueError, match="fill_defaults"):
        compute_feature_stats({"user_ctr_7d": np.array([np.nan])}, [BY_NAME["user_ctr_7d"]])


def test_standardize_handles_constant_features_and_negative_counts():
    out = Standardize(mean=2.0, variance=0.0, log=False)(np.array([[2.0], [5.0]], dtype=np.float32))
    np.testing.assert_allclose(np.asarray(out).ravel(), [0.0, 3.0])
    out = Standardize(mean=0.0, variance=1.0, log=True)(np.array([[-4.0], [np.e - 1]], dtype=np.float32))
    np.testing.assert_allclose(np.asarray(out).ravel(), [0.0, 1.0], rtol=1e-6)


def test_to_tensors_gives_one_column_per_feature_with_spec_dtype(frame):
    tensors = to_tensors(frame)
    assert list(tensors) == [f.name for f in MODEL_FEATURES]
    for f in MODEL_FEATURES:
        assert tensors[f.name].shape == (len(frame), 1)
        assert tensors[f.name].dtype.name == f.dtype
