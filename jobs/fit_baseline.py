"""The logistic-regression baseline of a training run (started by ``jobs.train`` before the ranker's workers).

One process: full-batch Newton-CG over the whole train split (``models.baseline.fit_logistic``), its
L2 strength chosen on the validation split. It exports the baseline's SavedModel and Keras weights to
the run directory, where the ranker's workers read its first-order weights (``start_from_baseline``),
and writes ``baseline_fit.json``. A process of its own, so that the stage's process never loads
TensorFlow and its memory is returned before the workers start.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from core.config import PctrConfig
from core.io import write_json_atomic
from core.layout import BASELINE_FIT, BASELINE_WEIGHTS, ranker_dir
from jobs.split_stream import row_groups, stream_dataset
from jobs.training_set import load_feature_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ds", required=True)
    parser.add_argument("--feature-stats", type=Path, help="feature statistics of a warm-start model")
    args = parser.parse_args()
    cfg = PctrConfig.model_validate_json(args.config.read_text())

    from models.baseline import build_logistic, fit_logistic
    from models.export import export_saved_model
    from models.features import MODEL_FEATURES

    started = time.time()
    out = ranker_dir(cfg, args.ds)
    # the ranker's preprocessing, so that its first-order part can take these weights as they are
    stats = load_feature_stats(cfg, args.ds, args.feature_stats)
    baseline = build_logistic(MODEL_FEATURES, stats, cfg.train)
    train_ds, val_ds = (
        stream_dataset(row_groups(cfg, args.ds, split), MODEL_FEATURES, 8 * cfg.train.batch_size)
        for split in ("train", "validation")
    )
    print("baseline (logistic regression, Newton-CG)", flush=True)
    fit = fit_logistic(
        baseline, train_ds, val_ds, cfg.train.baseline_c_values, cfg.train.baseline_max_iterations,
        lambda line: print(line, flush=True),
    )  # fmt: skip
    export_saved_model(baseline, out / "baseline_saved_model")
    partial = out / f"partial.{BASELINE_WEIGHTS}"  # Keras insists on the .weights.h5 suffix
    baseline.save_weights(partial)
    os.replace(partial, out / BASELINE_WEIGHTS)
    write_json_atomic(
        out / BASELINE_FIT,
        {**fit.to_dict(), "params": baseline.count_params(), "seconds": round(time.time() - started, 2)},
    )


if __name__ == "__main__":
    main()
