import math

import numpy as np
import pytest

from models.metrics import auc, ece, evaluate, logloss, normalized_entropy, oe_ratio, reliability


def test_constant_prediction_at_the_base_rate_is_perfectly_calibrated():
    labels = np.array([1, 0, 0, 0] * 25)
    preds = np.full(100, 0.25)
    result = evaluate(labels, preds)
    assert result["normalized_entropy"] == pytest.approx(1.0)
    assert result["oe_ratio"] == pytest.approx(1.0)
    assert result["ece"] == pytest.approx(0.0, abs=1e-12)
    assert result["logloss"] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert result["auc"] == pytest.approx(0.5)
    assert result["base_rate"] == pytest.approx(0.25)
    assert result["count"] == 100


def test_hand_computed_values():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0.1, 0.4, 0.35, 0.8])
    assert auc(labels, preds) == pytest.approx(0.75)  # 3 of the 4 (pos, neg) pairs ordered right
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert logloss(labels, preds) == pytest.approx(expected)
    assert normalized_entropy(labels, preds) == pytest.approx(expected / math.log(2))
    assert oe_ratio(labels, preds) == pytest.approx(2 / 1.65)


def test_weights_act_like_repeated_rows():
    labels = np.array([0, 1, 0, 1, 1])
    preds = np.array([0.2, 0.7, 0.4, 0.3, 0.9])
    weights = np.array([1, 2, 3, 1, 2])
    repeated = (np.repeat(labels, weights), np.repeat(preds, weights))
    for metric in (auc, logloss, normalized_entropy, oe_ratio):
        assert metric(labels, preds, weights) == pytest.approx(metric(*repeated))


def test_reliability_uses_equal_frequency_deciles_and_ece_weighs_them():
    preds = np.arange(100) / 100.0
    labels = np.zeros(100)
    labels[90:] = 1  # the top decile clicks every time
    bins = reliability(labels, preds)
    assert [b["count"] for b in bins] == [10] * 10
    assert bins[0]["mean_pred"] == pytest.approx(0.045) and bins[0]["observed"] == 0.0
    assert bins[9]["observed"] == 1.0
    expected = sum(abs(b["mean_pred"] - b["observed"]) for b in bins) / 10
    assert ece(labels, preds) == pytest.approx(expected)


def test_segments_get_their_own_metrics():
    labels = np.array([1, 0, 1, 0, 0, 0])
    preds = np.array([0.9, 0.1, 0.6, 0.4, 0.2, 0.3])
    device = np.array(["ios", "ios", "web", "web", "web", "web"])
    result = evaluate(labels, preds, segments={"device": device})
    ios = result["segments"]["device"]["ios"]
    assert ios["count"] == 2 and ios["auc"] == 1.0
    assert ios["logloss"] == pytest.approx(logloss(labels[:2], preds[:2]))
    assert result["segments"]["device"]["web"]["oe_ratio"] == pytest.approx(1 / 1.5)


def test_auc_is_none_for_a_single_class():
    assert auc(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4])) is None
