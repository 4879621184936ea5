"""Calibration stage: undo negative downsampling, then isotonic (or Platt) on a later slice than training."""

from __future__ import annotations

import time

from core.config import PctrConfig
from core.io import Stats, write_stats, write_text_atomic
from core.layout import calibrator_path, is_hour, ranker_dir
from jobs.training_set import load_split

# the ranker and the baseline are calibrated the same way, so their holdout logloss is comparable
MODELS = {"ranker": "saved_model", "baseline": "baseline_saved_model"}


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Fit one calibrator per model on the un-downsampled calibration split (ds-1, or the hours before the
    holdout of an hourly run)."""
    from models.calibration import Calibrator
    from models.metrics import ece
    from models.predictor import Predictor

    started = time.time()
    calibration = load_split(cfg, ds, "calibration")
    labels = calibration["label"].to_numpy()
    if len(set(labels.tolist())) < 2:
        raise ValueError(
            f"the calibration split of {ds} has {len(labels)} rows and {int(labels.sum())} clicks: a calibrator "
            "needs clicked and unclicked rows (an hourly run: raise hourly.calibration_hours)"
        )
    method = cfg.hourly.calibration if is_hour(ds) else cfg.train.calibration
    out: Stats = {"stage": "calibrate", "ds": ds, "method": method, "rows": len(calibration)}
    for model, saved_model in MODELS.items():
        scores = Predictor(ranker_dir(cfg, ds) / saved_model).raw_scores(calibration)
        calibrator = Calibrator.fit(scores, labels, method=method, neg_rate=cfg.join.neg_rate)
        write_text_atomic(calibrator_path(cfg, ds, model), calibrator.to_json())
        out[model] = {
            "ece_raw": ece(labels, scores),
            "ece_calibrated_in_sample": ece(labels, calibrator.predict(scores)),
            "path": str(calibrator_path(cfg, ds, model)),
        }
    out["seconds"] = round(time.time() - started, 2)
    return write_stats(ranker_dir(cfg, ds) / "calibration", out)
