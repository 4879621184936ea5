"""The ranker predictor: SavedModel scores -> calibrated pCTR. Evaluation and the service both use it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from models.calibration import Calibrator
from models.features import MODEL_FEATURES

SCORE_CHUNK = 16_384


class Predictor:
    """A ranker SavedModel (raw features in) plus an optional calibrator (JSON)."""

    def __init__(self, saved_model: Path, calibrator: Calibrator | None = None) -> None:
        from models.export import load_serving_fn

        self._score = load_serving_fn(saved_model)
        self.calibrator = calibrator

    @classmethod
    def load(cls, saved_model: Path, calibrator_json: Path | None) -> Predictor:
        calibrator = Calibrator.from_json(calibrator_json.read_text()) if calibrator_json else None
        return cls(saved_model, calibrator)

    def raw_scores(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Model outputs q (downsampled odds) for rows given as spec-named columns with defaults filled."""
        n = len(columns[MODEL_FEATURES[0].name])
        out = np.empty(n, dtype=np.float64)
        for lo in range(0, n, SCORE_CHUNK):
            chunk = {f.name: np.asarray(columns[f.name])[lo : lo + SCORE_CHUNK] for f in MODEL_FEATURES}
            out[lo : lo + SCORE_CHUNK] = self._score(chunk)
        return out

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Calibrated click probabilities."""
        scores = self.raw_scores(columns)
        return self.calibrator.predict(scores) if self.calibrator is not None else scores
