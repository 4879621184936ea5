"""One Horovod rank of the ranker training (started by ``jobs.train`` through horovodrun).

Each rank reads its own share of the train split's Parquet shards; gradients are averaged with
Horovod (Gloo); rank 0 exports the SavedModels and writes ``result.json``. The logistic-regression
baseline is small and trained by rank 0 alone after the ranker.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jobs.config import PctrConfig
from jobs.io import write_json_atomic
from jobs.layout import Layout
from jobs.training_set import load_feature_stats, load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ds", required=True)
    args = parser.parse_args()
    cfg = PctrConfig.model_validate_json(args.config.read_text())

    import horovod.tensorflow as hvd
    import keras
    import numpy as np

    from models.baseline import build_logistic
    from models.deepfm import build_deepfm
    from models.export import export_saved_model
    from models.features import FEATURES
    from models.inputs import make_dataset
    from models.training import train

    hvd.init()
    keras.utils.set_random_seed(cfg.train.seed + hvd.rank())
    layout = Layout(cfg.home)
    out = layout.run_dir(args.ds) / "ranker"
    stats = load_feature_stats(cfg, args.ds)
    train_df = load_split(cfg, args.ds, "train", shard=(hvd.rank(), hvd.size()))
    # every rank must run the same number of steps, or the gradient allreduce waits forever
    common_rows = int(hvd.allreduce(np.array(len(train_df)), op=hvd.Min, name="rows_per_rank"))
    train_df = train_df.iloc[:common_rows]
    val_df = load_split(cfg, args.ds, "validation")
    # unweighted on purpose: the model learns the downsampled odds and calibration undoes them
    train_ds = make_dataset(train_df, train_df["label"], cfg.train.batch_size, shuffle_seed=cfg.train.seed + hvd.rank())
    val_ds = make_dataset(val_df, val_df["label"], 4 * cfg.train.batch_size)

    log = print if hvd.rank() == 0 else (lambda *a, **k: None)
    started = time.time()
    model = build_deepfm(FEATURES, stats, cfg.train)
    history = train(model, train_ds, val_ds, cfg.train, hvd=hvd, log=log)
    ranker_seconds = time.time() - started
    if hvd.rank() != 0:
        return

    export_saved_model(model, out / "saved_model")
    started_baseline = time.time()
    baseline = build_logistic(FEATURES, stats, cfg.train)
    train(baseline, train_ds, val_ds, cfg.train, hvd=None, log=log)
    export_saved_model(baseline, out / "baseline_saved_model")
    write_json_atomic(
        out / "result.json",
        {
            "history": history,
            "params": model.count_params(),
            "ranker_seconds": round(ranker_seconds, 2),
            "baseline_seconds": round(time.time() - started_baseline, 2),
            "examples_per_second": round(float(np.mean(history["examples_per_sec"])), 1),
            "saved_model": str(out / "saved_model"),
            "baseline_saved_model": str(out / "baseline_saved_model"),
        },
    )


if __name__ == "__main__":
    main()
