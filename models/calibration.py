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


def _piecewise_linear(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear interpolation through the knots ``(x, y)``; beyond the ends, the end segments extended in logit
    space, which keeps the map strictly increasing and inside (0, 1) (the fit's lowest level is often its floor)."""
    inside = np.interp(p, x, y)
    if x.size < 2:
        return inside

    def extended(end: int, other: int) -> np.ndarray:
        slope = (_logit(y[end]) - _logit(y[other])) / (_logit(x[end]) - _logit(x[other]))
        return 1.0 / (1.0 + np.exp(-(_logit(y[end]) + slope * (_logit(p) - _logit(x[end])))))

    return np.where(p < x[0], extended(0, 1), np.where(p > x[-1], extended(-1, -2), inside))


@dataclass(frozen=True)
class Calibrator:
    """Maps raw model outputs to calibrated click probabilities.

    isotonic: centred isotonic regression. Isotonic regression's fit is a step function, which maps
    every score of a step to one probability: on the demo's holdout 200k predictions took 81 values,
    so the auction could not tell the ads of a step apart and the holdout AUC fell by 0.001. The
    calibrator keeps the fit's level at each step's centre (the mean score of its rows) and interpolates
    linearly between centres (beyond the first and the last, in logit space): strictly increasing, it
    keeps the model's order of the scores.
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
            levels, step = np.unique(iso.fit(p, y, sample_weight=w).predict(p), return_inverse=True)
            weights = np.ones_like(p) if w is None else w
            centres = np.bincount(step, weights=weights * p) / np.bincount(step, weights=weights)
            return cls(method, neg_rate, x=tuple(map(float, centres)), y=tuple(map(float, levels)))
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
            return _piecewise_linear(p, np.asarray(self.x), np.asarray(self.y))
        return 1.0 / (1.0 + np.exp(-(self.slope * _logit(p) + self.intercept)))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        data = json.loads(text)
        return cls(**{**data, "x": tuple(data["x"]), "y": tuple(data["y"])})
