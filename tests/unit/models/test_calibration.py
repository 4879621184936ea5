import numpy as np
import pytest

from models.calibration import Calibrator, correct_downsampling
from models.metrics import ece


def test_correct_downsampling_inverts_negative_downsampling():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.001, 0.5, 1000)
    w = 0.1
    # Keeping negatives at rate w scales the odds by 1/w.
    q = (p / (1 - p) / w) / (1 + p / (1 - p) / w)
    np.testing.assert_allclose(correct_downsampling(q, w), p, rtol=1e-12)
    assert correct_downsampling(np.array([0.5]), 0.1)[0] == pytest.approx(0.5 / (0.5 + 0.5 / 0.1))
    np.testing.assert_array_equal(correct_downsampling(q, 1.0), q)
    with pytest.raises(ValueError):
        correct_downsampling(q, 0.0)


def _miscalibrated(n: int, seed: int, neg_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores of a model trained at ``neg_rate`` that is also overconfident, and true labels."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (1.0 + np.exp(-rng.normal(-3.5, 1.0, n)))
    labels = (rng.random(n) < p).astype(float)
    distorted = 1.0 / (1.0 + np.exp(-(1.6 * np.log(p / (1 - p)) + 2.0)))
    scores = distorted / (distorted + (1 - distorted) * neg_rate)  # as if trained on downsampled data
    return scores, labels


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_reduces_ece_on_a_later_slice_and_round_trips_json(method):
    neg_rate = 0.2
    fit_scores, fit_labels = _miscalibrated(20_000, 1, neg_rate)
    scores, labels = _miscalibrated(20_000, 2, neg_rate)
    calibrator = Calibrator.fit(fit_scores, fit_labels, method=method, neg_rate=neg_rate)

    before = ece(labels, correct_downsampling(scores, neg_rate))
    after = ece(labels, calibrator.predict(scores))
    assert after < 0.5 * before, (before, after)

    restored = Calibrator.from_json(calibrator.to_json())
    assert restored == calibrator
    np.testing.assert_array_equal(restored.predict(scores), calibrator.predict(scores))


def test_isotonic_calibration_keeps_the_order_of_the_scores_and_the_levels_of_the_isotonic_fit():
    from sklearn.isotonic import IsotonicRegression

    from models.metrics import auc

    scores, labels = _miscalibrated(5_000, 3, 1.0)
    calibrator = Calibrator.fit(scores, labels, method="isotonic")
    # at each step's centre, the level of scikit-learn's isotonic fit
    iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6).fit(scores, labels)
    np.testing.assert_allclose(calibrator.predict(np.array(calibrator.x)), iso.predict(calibrator.x), rtol=1e-12)
    assert len(calibrator.x) > 5
    # strictly increasing: the scores' order (and AUC) kept, where the step function ties every step
    later, later_labels = _miscalibrated(5_000, 4, 1.0)
    ordered = calibrator.predict(np.sort(later))
    assert np.all(np.diff(ordered) > 0)
    assert auc(later_labels, calibrator.predict(later)) == pytest.approx(auc(later_labels, later), abs=1e-12)
    assert auc(later_labels, iso.predict(later)) < auc(later_labels, later)
    out = calibrator.predict(np.array([0.0, 1.0]))
    assert np.all((out > 0) & (out < 1))


def test_platt_recovers_a_known_logit_transform():
    rng = np.random.default_rng(4)
    raw = 1.0 / (1.0 + np.exp(-rng.normal(0.0, 2.0, 50_000)))
    true_p = 1.0 / (1.0 + np.exp(-(0.5 * np.log(raw / (1 - raw)) - 1.0)))
    labels = (rng.random(raw.size) < true_p).astype(float)
    calibrator = Calibrator.fit(raw, labels, method="platt")
    assert calibrator.slope == pytest.approx(0.5, abs=0.05)
    assert calibrator.intercept == pytest.approx(-1.0, abs=0.05)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown"):
        Calibrator.fit(np.array([0.1, 0.9]), np.array([0, 1]), method="beta")  # type: ignore[arg-type]
