"""One Horovod rank of the ranker training (started by ``jobs.train`` through horovodrun).

Each rank streams its share of the train split's Parquet row groups (``jobs.split_stream``);
gradients are averaged with Horovod (Gloo). The ranker's first-order part is the baseline that
``jobs.fit_baseline`` fitted just before, frozen: the workers learn what it misses. With ``--search``
the ranks train once per setting of the configured grid (``models.search``) and keep the best on
validation. Rank 0 checkpoints every epoch (of every trial), exports the SavedModel, the Keras weights
and the feature statistics they were trained with, and writes ``result.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import PctrConfig
from core.io import write_json_atomic
from core.layout import BASELINE_WEIGHTS, CHECKPOINTS, FEATURE_STATS, RANKER_WEIGHTS, Layout, ranker_dir
from jobs.split_stream import common_steps, row_groups, shard, stream_dataset
from jobs.training_set import load_feature_stats

if TYPE_CHECKING:
    from models.frames import FeatureStats


def run_key(*inputs: Path | None) -> str:
    """What makes two runs the same: the files they start from (configuration, the training set's stats, which
    change on every rebuild, start weights; None for one that is absent)."""
    digest = hashlib.sha256()
    for path in inputs:
        digest.update(path.read_bytes() if path is not None else b"-")
    return digest.hexdigest()


def main() -> None:
    """Train the ranker on this rank's shards from the fitted baseline (with ``--search``, once per setting of
    the configured grid, keeping the best); rank 0 exports it and writes ``result.json``."""
    args = _parse_args()
    cfg = PctrConfig.model_validate_json(args.config.read_text())

    import horovod.tensorflow as hvd

    from models.baseline import build_logistic
    from models.deepfm import build_deepfm, start_from_baseline
    from models.features import MODEL_FEATURES
    from models.search import grid, search
    from models.training import Checkpoints, examples_per_second, train, trial_summary

    _init_rank(cfg, hvd)
    layout = Layout(cfg.home)
    out = ranker_dir(cfg, args.ds)
    # a warm start keeps its model's preprocessing: the weights were learnt on those buckets and scales
    stats = load_feature_stats(cfg, args.ds, args.feature_stats)
    steps, datasets = _rank_datasets(cfg, args.ds, hvd)
    log = print if hvd.rank() == 0 else (lambda *a, **k: None)
    started = time.time()
    # after a warm start too: the first-order part is today's fitted baseline, whatever the start weights held
    baseline = build_logistic(MODEL_FEATURES, stats, cfg.train)
    baseline.load_weights(out / BASELINE_WEIGHTS)
    training_set_stats = layout.training_set(args.ds) / "_stats.json"
    key = run_key(args.config, training_set_stats, args.init_weights, out / BASELINE_WEIGHTS)

    def fit(
        hyperparameters: Any, checkpoints: Checkpoints, epochs: int | None = None
    ) -> tuple[float, tuple[Any, dict[str, Any]], dict[str, Any]]:
        """Train a fresh ranker from the baseline (or what ``checkpoints`` hold of it) up to ``epochs``."""
        model = build_deepfm(MODEL_FEATURES, stats, hyperparameters)
        _warm_start(model, args.init_weights)
        start_from_baseline(model, baseline)
        # the same batches as an uninterrupted run, whether this call starts the run or goes on with it
        train_ds, val_ds = datasets(hyperparameters.seed, checkpoints.epochs_done())
        history = train(
            model, train_ds, val_ds, hyperparameters, hvd=hvd, log=log, epochs=epochs, steps_per_epoch=steps,
            checkpoints=checkpoints,
        )  # fmt: skip
        return history["best_val_logloss"], (model, history), trial_summary(history)

    searched = None
    if args.search:
        settings = grid(cfg.train.search_learning_rates, cfg.train.search_embedding_weight_decay)
        log(f"search over {len(settings)} settings")

        def fit_trial(hyperparameters: Any, epochs: int) -> tuple[float, tuple[Any, dict[str, Any]], dict[str, Any]]:
            trial = f"lr{hyperparameters.learning_rate:g}-decay{hyperparameters.embedding_weight_decay:g}"
            return fit(hyperparameters, Checkpoints(out / CHECKPOINTS / trial, f"{key}-{trial}"), epochs)

        searched = search(settings, cfg.train, fit_trial, log)
        model, history = searched.fitted
    else:
        _, (model, history), _ = fit(cfg.train, Checkpoints(out / CHECKPOINTS, key))
    ranker_seconds = time.time() - started
    workers = hvd.allgather_object(_where(hvd))

    if hvd.rank() != 0:
        return

    _export(out, model, stats)
    write_json_atomic(
        out / "result.json",
        {
            "history": history,
            "search": {"best": asdict(searched.best), "trials": searched.trials} if searched else None,
            "params": model.count_params(),
            "ranker_seconds": round(ranker_seconds, 2),
            "examples_per_second": examples_per_second(history),
            "saved_model": str(out / "saved_model"),
            "workers": workers,
        },
    )


def _parse_args() -> argparse.Namespace:
    """The command line that ``jobs.train`` gives every rank."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--ds", required=True)
    parser.add_argument("--init-weights", type=Path, help="Keras weights to start from (warm start)")
    parser.add_argument("--feature-stats", type=Path, help="feature statistics of the warm-start model")
    parser.add_argument("--search", action="store_true", help="train once per setting of train.search_*, keep the best")
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


def _where(hvd: Any) -> dict[str, Any]:
    """Where this rank ran: its host in horovodrun's ``-H``, and the ssh server address it was started through
    (None: horovodrun started it on its own machine, without ssh)."""
    ssh = os.environ.get("SSH_CONNECTION", "").split()  # client address, client port, server address, server port
    return {"rank": hvd.rank(), "host": os.environ["HOROVOD_HOSTNAME"], "ssh_server": ":".join(ssh[2:]) or None}


def _rank_datasets(cfg: PctrConfig, ds: str, hvd: Any) -> tuple[int, Callable[[int, int], tuple[Any, Any]]]:
    """The steps per epoch that every rank can take, and a maker of this rank's (train, validation) datasets
    (from a seed and the first epoch they serve).

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

    def datasets(seed: int, first_epoch: int) -> tuple[Any, Any]:
        # unweighted on purpose: the model learns the downsampled odds and calibration undoes them
        return (
            stream_dataset(
                my_train, MODEL_FEATURES, batch_size, shuffle_seed=seed + hvd.rank(), first_epoch=first_epoch
            ),
            stream_dataset(my_validation, MODEL_FEATURES, 4 * batch_size),
        )

    return steps, datasets


def _warm_start(model: Any, init_weights: Path | None) -> None:
    """Load the warm-start weights, if any."""
    if init_weights is None:
        return
    try:
        model.load_weights(init_weights)
    except ValueError as error:
        raise SystemExit(
            f"cannot warm start from {init_weights}: {error} (did embedding_dim, hidden_units or the "
            "feature spec change since that version?)"
        ) from error


def _export(out: Path, model: Any, stats: FeatureStats) -> None:
    """Rank 0: the SavedModel, the Keras weights (for warm starts) and the feature statistics."""
    from models.export import export_saved_model

    export_saved_model(model, out / "saved_model")
    partial = out / f"partial.{RANKER_WEIGHTS}"  # Keras insists on the .weights.h5 suffix
    model.save_weights(partial)
    os.replace(partial, out / RANKER_WEIGHTS)
    write_json_atomic(out / FEATURE_STATS, stats.to_dict())


if __name__ == "__main__":
    main()
