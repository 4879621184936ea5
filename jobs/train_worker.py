"""One Horovod rank of the ranker training (started by ``jobs.train`` through horovodrun).

Each rank reads its own share of the train split's Parquet shards; gradients are averaged with
Horovod (Gloo); rank 0 checkpoints every epoch, exports the SavedModels and the Keras weights and
writes ``result.json``. The logistic-regression baseline is small and trained by rank 0 alone after
the ranker, on the whole train split.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

from jobs.config import PctrConfig
from jobs.io import write_json_atomic
from jobs.layout import Layout
from jobs.train import CHECKPOINTS, RANKER_WEIGHTS, ranker_dir
from jobs.training_set import load_feature_stats, load_split


def run_key(config_path: Path, training_set_stats: Path, init_weights: Path | None) -> str:
    """What makes two runs the same: configuration, training set (its stats change on every rebuild), start weights."""
    digest = hashlib.sha256()
    for path in (config_path, training_set_stats, init_weights):
        digest.update(path.read_bytes() if path is not None else b"-")
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ds", required=True)
    parser.add_argument("--init-weights", type=Path, help="Keras weights to start from (warm start)")
    args = parser.parse_args()
    cfg = PctrConfig.model_validate_json(args.config.read_text())

    import horovod.tensorflow as hvd
    import keras
    import numpy as np

    from models.baseline import build_logistic
    from models.deepfm import build_deepfm
    from models.export import export_saved_model
    from models.features import MODEL_FEATURES
    from models.inputs import make_dataset
    from models.training import Checkpoints, train, validation_logloss

    hvd.init()
    keras.utils.set_random_seed(cfg.train.seed + hvd.rank())
    layout = Layout(cfg.home)
    out = ranker_dir(cfg, args.ds)
    stats = load_feature_stats(cfg, args.ds)
    train_df = load_split(cfg, args.ds, "train", shard=(hvd.rank(), hvd.size()))
    # every rank must run the same number of steps, or the gradient allreduce waits forever
    common_rows = int(hvd.allreduce(np.array(len(train_df)), op=hvd.Min, name="rows_per_rank"))
    train_df = train_df.iloc[:common_rows]
    # one validation shard on disk: each rank scores its slice and the losses are summed across ranks
    validation = load_split(cfg, args.ds, "validation")
    val_df = validation.iloc[hvd.rank() :: hvd.size()]
    # unweighted on purpose: the model learns the downsampled odds and calibration undoes them
    train_ds = make_dataset(train_df, train_df["label"], cfg.train.batch_size, shuffle_seed=cfg.train.seed + hvd.rank())
    val_ds = make_dataset(val_df, val_df["label"], 4 * cfg.train.batch_size)

    log = print if hvd.rank() == 0 else (lambda *a, **k: None)
    started = time.time()
    model = build_deepfm(MODEL_FEATURES, stats, cfg.train)
    warm_start_val_logloss = None
    if args.init_weights is not None:
        try:
            model.load_weights(args.init_weights)
        except ValueError as error:
            raise SystemExit(
                f"cannot warm start from {args.init_weights}: {error} (did hash_buckets, embedding_dim, "
                "hidden_units or the feature spec change since that version?)"
            ) from error
        # how good the starting point already is on this run's validation day
        warm_start_val_logloss = validation_logloss(model, val_ds, hvd)
        log(f"warm start from {args.init_weights}: val_logloss {warm_start_val_logloss:.5f}")
    key = run_key(args.config, layout.training_set(args.ds) / "_stats.json", args.init_weights)
    checkpoints = Checkpoints(out / CHECKPOINTS, key)
    history = train(model, train_ds, val_ds, cfg.train, hvd=hvd, log=log, checkpoints=checkpoints)
    ranker_seconds = time.time() - started
    if hvd.rank() != 0:
        return

    export_saved_model(model, out / "saved_model")
    partial = out / f"partial.{RANKER_WEIGHTS}"  # Keras insists on the .weights.h5 suffix
    model.save_weights(partial)
    os.replace(partial, out / RANKER_WEIGHTS)
    started_baseline = time.time()
    # the baseline sees the whole split, as the ranker did across its ranks: a fair comparison
    whole_train = load_split(cfg, args.ds, "train")
    baseline = build_logistic(MODEL_FEATURES, stats, cfg.train)
    train(
        baseline,
        make_dataset(whole_train, whole_train["label"], cfg.train.batch_size, shuffle_seed=cfg.train.seed),
        make_dataset(validation, validation["label"], 4 * cfg.train.batch_size),
        cfg.train,
        hvd=None,
        log=log,
    )
    export_saved_model(baseline, out / "baseline_saved_model")
    write_json_atomic(
        out / "result.json",
        {
            "history": history,
            "warm_start_val_logloss": warm_start_val_logloss,
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
