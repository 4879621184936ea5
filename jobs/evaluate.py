"""Evaluation stage: calibrated metrics on the un-downsampled holdout (ds), against the oracle, the
logistic-regression baseline and the current champion scored on the same rows, and the promotion gate.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from core.config import PctrConfig
from core.io import Stats, read_json, write_stats
from core.layout import Layout, calibrator_path, evaluation_dir, ranker_dir
from jobs.training_set import load_split
from models.features import stat_name

SUMMARY_METRICS = ("auc", "logloss", "normalized_entropy", "ece", "oe_ratio")


def segments(holdout: Any) -> dict[str, np.ndarray]:
    """Segments that hide problems in the aggregate: cold users and ads, placements, creative types."""
    return {
        "user": np.where(holdout[stat_name("user", "impressions", 30)].to_numpy() <= 0, "new", "returning"),
        "ad": np.where(holdout["ad_age_days"].to_numpy() < 1.0, "new", "established"),
        "placement": holdout["placement"].to_numpy(),
        "creative_type": holdout["ad_creative_type"].to_numpy(),
    }


def _oracle(layout: Layout, ds: str, holdout: Any) -> np.ndarray | None:
    """The simulator's true click probabilities for the holdout rows (None on real data)."""
    import pandas as pd

    truth_dir = layout.truth(ds)
    if not truth_dir.exists():
        return None
    truth = pd.read_parquet(truth_dir, columns=["impression_id", "p_click"]).drop_duplicates("impression_id")
    joined = holdout[["impression_id"]].merge(truth, on="impression_id", how="left")
    return None if joined["p_click"].isna().any() else joined["p_click"].to_numpy()


def _champion_predictions(layout: Layout, holdout: Any) -> tuple[str, np.ndarray] | None:
    """Scores of the live bundle's ranker on the same holdout, so the gate compares like with like."""
    from core.bundle import current_bundle_dir, read_manifest
    from models.predictor import Predictor

    bundle = current_bundle_dir(layout)
    if bundle is None:
        return None
    manifest = read_manifest(bundle)
    predictor = Predictor.load(bundle / "ranker", bundle / "calibrator.json")
    return manifest["version"], predictor.predict(holdout)


def _plots(directory: Path, labels: np.ndarray, preds: dict[str, np.ndarray], reliability: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    directory.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    mean_pred = [b["mean_pred"] for b in reliability]
    observed = [b["observed"] for b in reliability]
    top = max(max(mean_pred), max(observed)) * 1.1
    ax.plot([0, top], [0, top], "k--", lw=1, label="perfect")
    ax.plot(mean_pred, observed, "o-", label="ranker (calibrated)")
    ax.set(xlabel="mean predicted pCTR (decile)", ylabel="observed CTR", title="Reliability on holdout")
    ax.legend()
    fig.savefig(directory / "reliability.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in preds.items():
        fpr, tpr, _ = roc_curve(labels, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on holdout")
    ax.legend()
    fig.savefig(directory / "roc.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [str(directory / "reliability.png"), str(directory / "roc.png")]


def gate(cfg: PctrConfig, metrics: dict[str, Any], champion: dict[str, Any] | None) -> tuple[bool, str]:
    """Promote unless the candidate is clearly worse than the champion on the same holdout."""
    if metrics["ece"] > cfg.gate.max_ece:
        return False, f"ece {metrics['ece']:.4f} > {cfg.gate.max_ece}"
    if champion is None:
        return True, "no champion yet"
    drop = champion["auc"] - metrics["auc"]
    if drop > cfg.gate.max_auc_drop:
        return False, f"auc {metrics['auc']:.4f} is {drop:.4f} below champion {champion['version']}"
    return True, f"auc {metrics['auc']:.4f} vs champion {champion['auc']:.4f}"


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Score the holdout, compute all metrics and decide whether the candidate may become champion."""
    from models.metrics import evaluate
    from models.predictor import Predictor

    started = time.time()
    layout = Layout(cfg.home)
    holdout = load_split(cfg, ds, "holdout")
    labels = holdout["label"].to_numpy()
    if np.unique(labels).size < 2:
        raise ValueError(f"the holdout of ds={ds} has {len(labels)} rows of one label: its AUC is undefined")
    ranker = Predictor.load(ranker_dir(cfg, ds) / "saved_model", calibrator_path(cfg, ds, "ranker"))
    baseline = Predictor.load(ranker_dir(cfg, ds) / "baseline_saved_model", calibrator_path(cfg, ds, "baseline"))
    preds = {"ranker": ranker.predict(holdout), "baseline": baseline.predict(holdout)}
    report = evaluate(labels, preds["ranker"], segments=segments(holdout))
    baseline_metrics = evaluate(labels, preds["baseline"])
    metrics = {k: report[k] for k in SUMMARY_METRICS}
    metrics["baseline_auc"] = baseline_metrics["auc"]
    metrics["baseline_logloss"] = baseline_metrics["logloss"]
    oracle = _oracle(layout, ds, holdout)
    if oracle is not None:
        oracle_metrics = evaluate(labels, oracle)
        metrics["oracle_auc"] = oracle_metrics["auc"]
        metrics["oracle_logloss"] = oracle_metrics["logloss"]
        preds["oracle"] = oracle

    champion = None
    scored = _champion_predictions(layout, holdout)
    if scored is not None:
        version, champion_preds = scored
        champion = {"version": version, **{k: evaluate(labels, champion_preds)[k] for k in ("auc", "logloss")}}
    promote, reason = gate(cfg, metrics, champion)
    out_dir = evaluation_dir(cfg, ds)
    stats: Stats = {
        "stage": "evaluate",
        "ds": ds,
        "rows": len(holdout),
        "positives": int(labels.sum()),
        "metrics": metrics,
        "reliability": report["reliability"],
        "segments": report.get("segments", {}),
        "champion": champion,
        "promote": promote,
        "gate_reason": reason,
        "plots": _plots(out_dir, labels, preds, report["reliability"]),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(out_dir, stats)


def load_evaluation(cfg: PctrConfig, ds: str) -> Stats:
    return read_json(evaluation_dir(cfg, ds) / "_stats.json")
