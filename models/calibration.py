"""Calibration of ranker scores: undo negative downsampling, then isotonic or Platt scaling.

The one implementation used by evaluation and by serving. ``Calibrator.predict`` is plain numpy
over parameters stored as JSON, so serving needs neither sklearn nor pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Method = Literal["isotonic", "platt"]

# Calibrated probabilities stay strictly inside (0, 1) so that log loss and logits stay finite.
_P_MIN = 1e-6
_P_MAX = 1.0 - 1e-6


def correct_downsampling(q: np.ndarray, neg_rate: float) -> np.ndarray:
    """True-rate probability from a score ``q`` learned on data whose negatives were kept at ``neg_rate``.

    Downsampling divides the odds by ``neg_rate``, so ``p = q / (q + (1 - q) / neg_rate)``.
    """
    if not 0.0 < neg_rate <= 1.0:
        raise ValueError(f"neg_rate must be in (0, 1], got {neg_rate}")
    q = np.asarray(q, dtype=np.float64)
    return q / (q + (1.0 - q) / neg_rate)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _P_MIN, _P_MAX)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibrator:
    """Maps raw model outputs to calibrated click probabilities.

    isotonic: piecewise-linear interpolation over ``x`` -> ``y`` thresholds, clipped at the ends
    (what ``IsotonicRegression(out_of_bounds="clip").predict`` does).
    platt: ``sigmoid(slope * logit(p) + intercept)``.
    Both apply to ``p = correct_downsampling(score, neg_rate)``. Build one with ``Calibrator.fit``.
    """

    method: Method
    neg_rate: float
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    slope: float = 1.0
    intercept: float = 0.0

    @classmethod
    def fit(
        cls,
        scores: np.ndarray,
        labels: np.ndarray,
        method: Method = "isotonic",
        neg_rate: float = 1.0,
        sample_weight: np.ndarray | None = None,
    ) -> Calibrator:
        """Fit on raw model ``scores`` and click ``labels`` of a time slice later than the training data.

        The labels must be un-downsampled (or ``sample_weight`` must undo the sampling).
        """
        # imported here: the service only applies calibrators and should not load scikit-learn
        from sklearn.isotonic import IsotonicRegression
        from sklearn.linear_model import LogisticRegression

        p = correct_downsampling(np.ravel(scores), neg_rate)
        y = np.ravel(labels).astype(np.float64)
        w = None if sample_weight is None else np.ravel(sample_weight).astype(np.float64)
        if method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=_P_MIN, y_max=_P_MAX)
            iso.fit(p, y, sample_weight=w)
            return cls(method, neg_rate, x=tuple(map(float, iso.X_thresholds_)), y=tuple(map(float, iso.y_thresholds_)))
        if method == "platt":
            # C=inf: unpenalised; a penalty would shrink the slope towards 0 for no reason here.
            lr = LogisticRegression(C=np.inf)
            lr.fit(_logit(p).reshape(-1, 1), y, sample_weight=w)
            return cls(method, neg_rate, slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0]))
        raise ValueError(f"unknown calibration method {method!r}")

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64, same shape as ``scores``) of raw model ``scores``."""
        p = correct_downsampling(scores, self.neg_rate)
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        return 1.0 / (1.0 + np.exp(-(self.slope * _logit(p) + self.intercept)))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        data = json.loads(text)
        return cls(**{**data, "x": tuple(data["x"]), "y": tuple(data["y"])})
