"""Publish stage: assemble a versioned serving bundle and, if register promoted the model, flip CURRENT to it.

The bundle of an hourly refresh (``<hour>-v<version>``) holds its ranker and calibrator and the retrieval
towers, index and ads table of the daily run it descends from.

A retry rewrites the same bundle (``<ds>-v<model version>``, the version a retried register reuses).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time

from core.bundle import MANIFEST, file_checksums
from core.champion import point_current
from core.config import PctrConfig
from core.io import Stats, read_json, staged_dir, write_json_atomic, write_stats
from core.layout import Layout, calibrator_path, ranker_dir, retrieval_dir
from jobs.evaluate import load_evaluation
from jobs.train_hourly import base_run
from jobs.training_set import training_set_sources
from models.features import RANKER_SERVICE


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Write ``serving/bundles/<ds>-v<model version>/`` atomically; replace CURRENT atomically if promoted."""
    started = time.time()
    layout = Layout(cfg.home)
    registered = read_json(layout.stage_output("register", ds) / "_stats.json")
    evaluation = load_evaluation(cfg, ds)
    version = f"{ds}-v{registered['model_version']}"
    bundle = layout.bundles / version
    # an hourly refresh serves the retrieval of the daily run it descends from
    retrieval = retrieval_dir(cfg, base_run(cfg, ds)["base_ds"])
    with staged_dir(bundle) as scratch:
        shutil.copytree(ranker_dir(cfg, ds) / "saved_model", scratch / "ranker")
        shutil.copy2(calibrator_path(cfg, ds), scratch / "calibrator.json")
        for tower in ("user_tower", "ad_tower"):
            shutil.copytree(retrieval / tower, scratch / tower)
        for name in ("faiss.index", "ads.parquet"):
            shutil.copy2(retrieval / name, scratch / name)
        manifest = {
            "version": version,
            "ds": ds,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "model_name": registered["model_name"],
            "model_version": registered["model_version"],
            # The version TF Serving serves ranker/ as (<model_base_path>/<N>/), which a remote-scoring
            # service checks and requests. The registered version: an integer, never reused for another
            # ranker, and the number the served log already records.
            "tf_serving_version": int(registered["model_version"]),
            "mlflow_run_id": registered["run_id"],
            "feature_service": RANKER_SERVICE,
            "data_dates": {split: list(days) for split, days in training_set_sources(cfg, ds).items()},
            "metrics": evaluation["metrics"],
            "checksums": file_checksums(scratch),
        }
        write_json_atomic(scratch / MANIFEST, manifest)
    live = bool(registered["promoted"])
    if live:
        point_current(layout, version)
    stats: Stats = {
        "stage": "publish",
        "ds": ds,
        "bundle": str(bundle),
        "version": version,
        "current": layout.current_pointer.read_text().strip() if layout.current_pointer.exists() else None,
        "flipped": live,
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(layout.stage_output("publish", ds), stats)
