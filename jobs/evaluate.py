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
from core.layout import Layout, calibrator_path, evaluation_dir, period_bounds, period_day, ranker_dir
from jobs.training_set import load_split, training_set_sources
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


def _oracle(layout: Layout, holdout_keys: list[str], holdout: Any) -> np.ndarray | None:
    """The simulator's true click probabilities for the holdout rows (None on real data)."""
    import pandas as pd

    truth_dirs = [layout.truth(day) for day in sorted({period_day(key) for key in holdout_keys})]
    if not all(path.exists() for path in truth_dirs):
        return None
    truth = pd.concat([pd.read_parquet(path, columns=["impression_id", "p_click"]) for path in truth_dirs])
    truth = truth.drop_duplicates("impression_id")
    joined = holdout[["impression_id"]].merge(truth, on="impression_id", how="left")
    return None if joined["p_click"].isna().any() else joined["p_click"].to_numpy()


def _champion_predictions(layout: Layout, holdout_keys: list[str], holdout: Any) -> tuple[str, np.ndarray | None]:
    """Scores of the live bundle's ranker on the same holdout, so the gate compares like with like.

    Only a champion whose data (training, validation and calibration days) all precede the holdout
    day is eligible: one that has seen the holdout day (a backfill of an older day) would win unfairly.
    Returns the champion's version, or why there is none, and its scores (None when ineligible).
    """
    from core.bundle import current_bundle_dir, read_manifest
    from models.predictor import Predictor

    bundle = current_bundle_dir(layout)
    if bundle is None:
        return "no champion yet", None
    manifest = read_manifest(bundle)
    # days and hours compare by their ends: a daily champion saw every hour of its calibration day
    seen = [key for split, keys in manifest["data_dates"].items() if split != "holdout" for key in keys]
    newest = max(seen, key=lambda key: period_bounds(key)[1])
    first = min(holdout_keys, key=lambda key: period_bounds(key)[0])
    if period_bounds(newest)[1] > period_bounds(first)[0]:
        return f"champion {manifest['version']} trained on data up to {newest}, not before the holdout {first}", None
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


def gate(cfg: PctrConfig, metrics: dict[str, Any], champion: dict[str, Any] | None) -> tuple[bool, list[str]]:
    """Whether the candidate may go live, and every check it failed (or, passing, what it was held to).

    Fails closed: the absolute checks (against the logistic-regression baseline scored on the same rows,
    calibration bounds relative to the base rate and widened by the holdout's sampling noise, better
    than predicting the base rate) apply on every run, the first one included; the comparison with the
    champion is added when an eligible champion exists.
    """
    g = cfg.gate
    failed: list[str] = []
    if metrics["auc"] < metrics["baseline_auc"] - g.baseline_auc_tolerance:
        failed.append(f"auc {metrics['auc']:.4f} below the baseline's {metrics['baseline_auc']:.4f}")
    oe_margin = g.oe_noise_z * metrics["oe_sd"]
    low, high = g.oe_band[0] - oe_margin, g.oe_band[1] + oe_margin
    if not low <= metrics["oe_ratio"] <= high:
        failed.append(f"O/E {metrics['oe_ratio']:.3f} outside [{low:.3f}, {high:.3f}]")
    if metrics["normalized_entropy"] >= g.max_normalized_entropy:
        failed.append(f"normalized entropy {metrics['normalized_entropy']:.4f} >= {g.max_normalized_entropy}")
    max_ece = g.max_relative_ece * metrics["base_rate"] + g.ece_noise_multiple * metrics["ece_noise"]
    if metrics["ece"] > max_ece:
        failed.append(f"ECE {metrics['ece']:.5f} > {max_ece:.5f} (base rate {metrics['base_rate']:.4f})")
    if champion is not None:
        drop = champion["auc"] - metrics["auc"]
        if drop > g.max_auc_drop:
            failed.append(f"auc {metrics['auc']:.4f} is {drop:.4f} below champion {champion['version']}")
        increase = metrics["logloss"] / champion["logloss"] - 1.0
        if increase > g.max_relative_logloss_increase:
            failed.append(f"logloss {metrics['logloss']:.5f} is {increase:.1%} above champion {champion['version']}")
    if failed:
        return False, failed
    against = f"champion {champion['version']} (auc {champion['auc']:.4f})" if champion else "no eligible champion"
    return True, [f"auc {metrics['auc']:.4f} vs baseline {metrics['baseline_auc']:.4f} and {against}"]


def holdout_metrics(
    labels: np.ndarray, preds: np.ndarray, baseline_preds: np.ndarray, segments: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the gate reads (the candidate's summary metrics, the baseline's, the holdout's sampling noise)
    and the candidate's full report."""
    from models.metrics import calibration_noise, evaluate

    report = evaluate(labels, preds, segments=segments)
    baseline = evaluate(labels, baseline_preds)
    noise = calibration_noise(report["reliability"])
    metrics = {k: report[k] for k in SUMMARY_METRICS}
    metrics |= {"base_rate": report["base_rate"], "ece_noise": noise["ece"], "oe_sd": noise["oe_sd"]}
    return metrics | {"baseline_auc": baseline["auc"], "baseline_logloss": baseline["logloss"]}, report


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
    metrics, report = holdout_metrics(labels, preds["ranker"], preds["baseline"], segments(holdout))
    holdout_keys = list(training_set_sources(cfg, ds)["holdout"])
    oracle = _oracle(layout, holdout_keys, holdout)
    if oracle is not None:
        oracle_metrics = evaluate(labels, oracle)
        metrics["oracle_auc"] = oracle_metrics["auc"]
        metrics["oracle_logloss"] = oracle_metrics["logloss"]
        preds["oracle"] = oracle

    champion = None
    version_or_reason, champion_preds = _champion_predictions(layout, holdout_keys, holdout)
    if champion_preds is not None:
        scores = evaluate(labels, champion_preds)
        champion = {"version": version_or_reason, "auc": scores["auc"], "logloss": scores["logloss"]}
    promote, reasons = gate(cfg, metrics, champion)
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
        "champion_skipped": None if champion else version_or_reason,
        "promote": promote,
        "gate_reason": "; ".join(reasons),
        "plots": _plots(out_dir, labels, preds, report["reliability"]),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(out_dir, stats)


def load_evaluation(cfg: PctrConfig, ds: str) -> Stats:
    return read_json(evaluation_dir(cfg, ds) / "_stats.json")
