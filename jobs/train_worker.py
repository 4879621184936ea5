"""One Horovod rank of the ranker training (started by ``jobs.train`` through horovodrun).

Each rank streams its share of the train split's Parquet row groups (``jobs.split_stream``);
gradients are averaged with Horovod (Gloo); rank 0 checkpoints every epoch, exports the SavedModels,
the Keras weights and the feature statistics they were trained with, and writes ``result.json``.
The logistic-regression baseline is then trained the same way, on the same rows and ranks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import PctrConfig
from core.io import write_json_atomic
from core.layout import CHECKPOINTS, FEATURE_STATS, RANKER_WEIGHTS, Layout, ranker_dir
from jobs.split_stream import common_steps, row_groups, shard, stream_dataset
from jobs.training_set import load_feature_stats

if TYPE_CHECKING:
    from models.frames import FeatureStats


def run_key(config_path: Path, training_set_stats: Path, init_weights: Path | None) -> str:
    """What makes two runs the same: configuration, training set (its stats change on every rebuild), start weights."""
    digest = hashlib.sha256()
    for path in (config_path, training_set_stats, init_weights):
        digest.update(path.read_bytes() if path is not None else b"-")
    return digest.hexdigest()


def main() -> None:
    """Train the ranker, then the baseline, on this rank's shards; rank 0 exports them and writes ``result.json``."""
    args = _parse_args()
    cfg = PctrConfig.model_validate_json(args.config.read_text())

    import horovod.tensorflow as hvd

    from models.baseline import build_logistic
    from models.deepfm import build_deepfm
    from models.features import MODEL_FEATURES
    from models.training import Checkpoints, examples_per_second, train

    _init_rank(cfg, hvd)
    layout = Layout(cfg.home)
    out = ranker_dir(cfg, args.ds)
    # a warm start keeps its model's preprocessing: the weights were learnt on those buckets and scales
    stats = load_feature_stats(cfg, args.ds, args.feature_stats)
    steps, datasets = _rank_datasets(cfg, args.ds, hvd)
    log = print if hvd.rank() == 0 else (lambda *a, **k: None)
    started = time.time()
    model = build_deepfm(MODEL_FEATURES, stats, cfg.train)
    train_ds, val_ds = datasets(cfg.train.seed)
    warm_start_val_logloss = _warm_start(model, args.init_weights, val_ds, hvd, log)
    key = run_key(args.config, layout.training_set(args.ds) / "_stats.json", args.init_weights)
    checkpoints = Checkpoints(out / CHECKPOINTS, key)
    history = train(
        model, train_ds, val_ds, cfg.train, hvd=hvd, log=log, steps_per_epoch=steps, checkpoints=checkpoints
    )
    ranker_seconds = time.time() - started

    # the baseline trains on the same rows the same way, across the same ranks: a fair comparison
    started_baseline = time.time()
    baseline = build_logistic(MODEL_FEATURES, stats, cfg.train)
    log("baseline (logistic regression)")
    baseline_history = train(
        baseline, *datasets(cfg.train.seed + 1), cfg.train, hvd=hvd, log=log, steps_per_epoch=steps
    )
    baseline_seconds = time.time() - started_baseline
    if hvd.rank() != 0:
        return

    _export(out, model, baseline, stats)
    write_json_atomic(
        out / "result.json",
        {
            "history": history,
            "baseline_history": baseline_history,
            "warm_start_val_logloss": warm_start_val_logloss,
            "params": model.count_params(),
            "baseline_params": baseline.count_params(),
            "ranker_seconds": round(ranker_seconds, 2),
            "baseline_seconds": round(baseline_seconds, 2),
            "examples_per_second": examples_per_second(history),
            "baseline_examples_per_second": examples_per_second(baseline_history),
            "saved_model": str(out / "saved_model"),
            "baseline_saved_model": str(out / "baseline_saved_model"),
        },
    )


def _parse_args() -> argparse.Namespace:
    """The command line that ``jobs.train`` gives every rank."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ds", required=True)
    parser.add_argument("--init-weights", type=Path, help="Keras weights to start from (warm start)")
    parser.add_argument("--feature-stats", type=Path, help="feature statistics of the warm-start model")
    return parser.parse_args()


def _init_rank(cfg: PctrConfig, hvd: Any) -> None:
    """Start Horovod, share the machine's cores among the ranks and seed this rank."""
    import keras
    import tensorflow as tf

    hvd.init()
    # the workers share the machine's cores: TensorFlow's default pools per process would oversubscribe them
    threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras.utils.set_random_seed(cfg.train.seed + hvd.rank())


def _rank_datasets(cfg: PctrConfig, ds: str, hvd: Any) -> tuple[int, Callable[[int], tuple[Any, Any]]]:
    """The steps per epoch that every rank can take, and a maker of this rank's (train, validation) datasets.

    Every rank must take the same number of steps, since each step averages gradients across all of them.
    """
    from models.features import MODEL_FEATURES

    batch_size = cfg.train.batch_size
    train_groups = row_groups(cfg, ds, "train")
    steps = common_steps(train_groups, hvd.size(), batch_size)
    if steps == 0:
        raise SystemExit(f"the train split of ds={ds} has fewer than {batch_size} rows per Horovod rank")
    my_train = shard(train_groups, hvd.rank(), hvd.size())
    # each rank scores its row groups of the validation day; the losses are summed across ranks
    my_validation = shard(row_groups(cfg, ds, "validation"), hvd.rank(), hvd.size())

    def datasets(seed: int) -> tuple[Any, Any]:
        # unweighted on purpose: the model learns the downsampled odds and calibration undoes them
        return (
            stream_dataset(my_train, MODEL_FEATURES, batch_size, shuffle_seed=seed + hvd.rank()),
            stream_dataset(my_validation, MODEL_FEATURES, 4 * batch_size),
        )

    return steps, datasets


def _warm_start(model: Any, init_weights: Path | None, val_ds: Any, hvd: Any, log: Callable[..., Any]) -> float | None:
    """Load the warm-start weights, if any, and return their loss on this run's validation day (None without)."""
    from models.training import validation_logloss

    if init_weights is None:
        return None
    try:
        model.load_weights(init_weights)
    except ValueError as error:
        raise SystemExit(
            f"cannot warm start from {init_weights}: {error} (did embedding_dim, hidden_units or the "
            "feature spec change since that version?)"
        ) from error
    # how good the starting point already is on this run's validation day
    warm_start_val_logloss = validation_logloss(model, val_ds, hvd)
    log(f"warm start from {init_weights}: val_logloss {warm_start_val_logloss:.5f}")
    return warm_start_val_logloss


def _export(out: Path, model: Any, baseline: Any, stats: FeatureStats) -> None:
    """Rank 0: both SavedModels, the ranker's Keras weights (for warm starts) and the feature statistics."""
    from models.export import export_saved_model

    export_saved_model(model, out / "saved_model")
    export_saved_model(baseline, out / "baseline_saved_model")
    partial = out / f"partial.{RANKER_WEIGHTS}"  # Keras insists on the .weights.h5 suffix
    model.save_weights(partial)
    os.replace(partial, out / RANKER_WEIGHTS)
    write_json_atomic(out / FEATURE_STATS, stats.to_dict())


if __name__ == "__main__":
    main()
