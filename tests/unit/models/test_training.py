import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.deepfm import build_deepfm
from models.features import MODEL_FEATURES
from models.frames import compute_feature_stats
from models.inputs import make_dataset, to_tensors
from models.metrics import auc, logloss
from models.search import Setting, WithSetting
from models.training import Checkpoints, examples_per_second, train


@pytest.fixture(scope="module")
def data(make_data):
    splits = {name: make_data(n, seed) for name, n, seed in (("train", 2048, 1), ("val", 512, 2), ("test", 1024, 3))}
    frames = {name: frame for name, (frame, _) in splits.items()}
    labels = {name: y for name, (_, y) in splits.items()}
    stats = compute_feature_stats({c: frames["train"][c].to_numpy() for c in frames["train"].columns}, max_buckets=1024)
    return frames, labels, stats


def test_deepfm_learns_a_planted_signal(data, cfg):
    frames, labels, stats = data
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    lines: list[str] = []
    history = train(
        model,
        make_dataset(frames["train"], labels["train"], cfg.batch_size, shuffle_seed=cfg.seed),
        make_dataset(frames["val"], labels["val"], 256),
        cfg,
        log=lines.append,
    )
    preds = np.asarray(model(to_tensors(frames["test"])))[:, 0]
    assert auc(labels["test"], preds) > 0.75
    assert history["epochs_run"] >= 2 and len(history["val_logloss"]) == history["epochs_run"]
    base_rate_logloss = logloss(labels["val"], np.full(len(labels["val"]), labels["train"].mean()))
    assert history["best_val_logloss"] < base_rate_logloss - 0.1
    assert any("examples/s" in line and "loss" in line for line in lines)
    # throughput over whole epochs: every training example counted once per epoch, input waits within the epoch
    assert history["examples"] == [len(labels["train"])] * history["epochs_run"]
    assert all(
        0 <= wait < total for wait, total in zip(history["input_seconds"], history["epoch_seconds"], strict=True)
    )
    assert examples_per_second(history) == pytest.approx(sum(history["examples"]) / sum(history["epoch_seconds"]), 0.01)


def test_early_stopping_restores_the_best_weights(data, cfg):
    frames, labels, stats = data
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    # Validation labels are the opposite of the training signal, so validation gets worse as the
    # model learns, after the first epoch at the latest.
    val_labels = 1.0 - labels["val"]
    history = train(
        model,
        make_dataset(frames["train"], labels["train"], cfg.batch_size, shuffle_seed=cfg.seed),
        make_dataset(frames["val"], val_labels, 256),
        cfg,
        log=lambda _: None,
        epochs=10,
    )
    assert history["epochs_run"] == history["best_epoch"] + cfg.early_stopping_patience < 10
    preds = np.asarray(model(to_tensors(frames["val"])))[:, 0]
    assert logloss(val_labels, preds) == pytest.approx(history["best_val_logloss"], rel=1e-4)


def test_the_starting_point_is_kept_when_no_epoch_beats_it(data, cfg):
    """The weights training starts from (a fitted baseline's, a warm start's) are a candidate of early stopping."""
    frames, labels, stats = data
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    start = model.get_weights()
    history = train(
        model,
        make_dataset(frames["train"], labels["train"], cfg.batch_size, shuffle_seed=cfg.seed),
        make_dataset(frames["val"], 1.0 - labels["val"], 256),  # the opposite of what training learns
        cfg,
        log=lambda _: None,
    )
    assert history["best_epoch"] == 0 and history["epochs_run"] == cfg.early_stopping_patience
    assert history["best_val_logloss"] == history["initial_val_logloss"] < min(history["val_logloss"])
    for restored, initial in zip(model.get_weights(), start, strict=True):
        np.testing.assert_array_equal(restored, initial)


def test_training_on_small_data_can_stop_inside_an_epoch(data, cfg):
    """Trained towards all-zero labels, the predictions fall through the validation rate inside the first epoch:
    the validation loss falls, then rises, and training stops a patience's worth of checks after the best one."""
    frames, labels, stats = data
    cfg = cfg.model_copy(update={"validations_per_epoch": 4, "min_improvement_z": 0.0, "learning_rate": 0.002})
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    history = train(
        model,
        make_dataset(frames["train"], np.zeros_like(labels["train"]), cfg.batch_size, shuffle_seed=cfg.seed),
        make_dataset(frames["val"], labels["val"], 256),
        cfg,
        log=lambda _: None,
        epochs=10,
    )
    positions = [check["epoch"] for check in history["checks"]]
    assert positions[:4] == [0.25, 0.5, 0.75, 1.0]
    assert history["best_epoch"] % 1 != 0  # a point inside an epoch
    assert positions[-1] == history["best_epoch"] + cfg.early_stopping_patience
    assert history["epochs_run"] == math.ceil(positions[-1]) < 10
    preds = np.asarray(model(to_tensors(frames["val"])))[:, 0]
    assert logloss(labels["val"], preds) == pytest.approx(history["best_val_logloss"], rel=1e-4)


def test_a_lower_validation_loss_counts_only_beyond_its_standard_error(data, cfg):
    """The gain of each check is measured in standard errors; below ``min_improvement_z`` the start is kept."""
    frames, labels, stats = data
    datasets = (
        make_dataset(frames["train"], labels["train"], cfg.batch_size, shuffle_seed=cfg.seed),
        make_dataset(frames["val"], labels["val"], 256),
    )
    learnt = train(build_deepfm(MODEL_FEATURES, stats, cfg), *datasets, cfg, log=lambda _: None)
    assert learnt["best_epoch"] > 0 and learnt["best_val_logloss"] < learnt["initial_val_logloss"]
    strongest_gain = max(check["z"] for check in learnt["checks"])
    assert strongest_gain > cfg.min_improvement_z

    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    start = model.get_weights()
    strict = cfg.model_copy(update={"min_improvement_z": strongest_gain + 1})
    kept = train(model, *datasets, strict, log=lambda _: None)
    assert kept["best_epoch"] == 0 and kept["best_val_logloss"] == kept["initial_val_logloss"]
    assert min(check["val_logloss"] for check in kept["checks"]) < kept["initial_val_logloss"]
    for restored, initial in zip(model.get_weights(), start, strict=True):
        np.testing.assert_array_equal(restored, initial)


def test_weight_decay_shrinks_the_field_vectors_alone(data, cfg):
    frames, labels, stats = data
    tables = {}
    for decay in (0.0, 1.0):
        hyperparameters = WithSetting(cfg, Setting(cfg.learning_rate, decay))
        model = build_deepfm(MODEL_FEATURES, stats, hyperparameters)
        fit_ds = make_dataset(frames["train"], labels["train"], cfg.batch_size)
        train(
            model,
            fit_ds,
            make_dataset(frames["val"], labels["val"], 256),
            hyperparameters,
            log=lambda _: None,
            epochs=1,
        )
        tables[decay] = {
            name: np.linalg.norm(model.get_layer(name).get_weights()[0]) for name in ("emb_categorical", "dnn_0")
        }
    assert tables[1.0]["emb_categorical"] < 0.8 * tables[0.0]["emb_categorical"]
    assert tables[1.0]["dnn_0"] == pytest.approx(tables[0.0]["dnn_0"], rel=0.2)


class FakeHorovod:
    """Single-worker stand-in recording the Horovod calls the loop makes."""

    Average, Sum = "average", "sum"

    def __init__(self) -> None:
        self.broadcast: list[tf.Variable] = []
        self.ops: list[str] = []

    def size(self) -> int:
        return 1

    def rank(self) -> int:
        return 0

    def allreduce(self, tensor, op, name=None):
        self.ops.append(op)
        return tensor

    def grouped_allreduce(self, tensors, op):
        assert all(isinstance(t, tf.Tensor) for t in tensors)  # dense: one group, no per-table allgather
        self.ops.append(f"grouped {op} of {len(tensors)}")
        return tensors

    def broadcast_variables(self, variables, root_rank):
        assert root_rank == 0
        self.broadcast.extend(variables)


def test_horovod_path_broadcasts_underlying_variables_and_averages_gradients(data, cfg):
    frames, labels, stats = data
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    hvd = FakeHorovod()
    history = train(
        model,
        make_dataset(frames["train"], labels["train"], cfg.batch_size),
        make_dataset(frames["val"], labels["val"], 256),
        cfg,
        hvd=hvd,
        log=lambda _: None,
        epochs=1,
        steps_per_epoch=3,
    )
    assert history["epochs_run"] == 1
    assert all(isinstance(v, tf.Variable) for v in hvd.broadcast)
    assert len(hvd.broadcast) > len(model.variables)  # optimizer state too
    assert hvd.ops.count("sum") == 2  # the validation loss, of the start and once per epoch
    assert hvd.ops.count(f"grouped average of {len(model.trainable_variables)}") == 1  # traced once


def test_an_interrupted_run_resumes_after_its_last_checkpointed_epoch(data, cfg, tmp_path):
    frames, labels, stats = data
    cfg = cfg.model_copy(update={"early_stopping_patience": 5})
    datasets = (
        make_dataset(frames["train"], labels["train"], cfg.batch_size, shuffle_seed=cfg.seed),
        make_dataset(frames["val"], labels["val"], 256),
    )
    checkpoints = Checkpoints(tmp_path / "checkpoints", key="run-a")
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    first = train(model, *datasets, cfg, log=lambda _: None, epochs=2, checkpoints=checkpoints)
    assert [p.name for p in checkpoints.directory.glob("*.npz")] == ["epoch-002.npz"]

    # a new process: fresh model and optimizer, same run key
    model, lines = build_deepfm(MODEL_FEATURES, stats, cfg), []
    resumed = train(model, *datasets, cfg, log=lines.append, epochs=3, checkpoints=checkpoints)
    assert lines[0].startswith("resuming after epoch 2")
    assert resumed["epochs_run"] == 3 and resumed["val_logloss"][:2] == first["val_logloss"]
    assert sum("/3 loss" in line for line in lines) == 1  # only epoch 3 was trained
    assert json.loads(checkpoints.state_path.read_text())["history"]["val_logloss"] == resumed["val_logloss"]

    other = train(
        build_deepfm(MODEL_FEATURES, stats, cfg), *datasets, cfg, log=lambda _: None, epochs=1,
        checkpoints=Checkpoints(checkpoints.directory, key="run-b"),
    )  # fmt: skip
    assert other["epochs_run"] == 1  # another key's state is ignored, not resumed


def test_resuming_restores_the_optimizer_state(data, cfg, tmp_path):
    frames, labels, stats = data
    datasets = (
        make_dataset(frames["train"], labels["train"], cfg.batch_size),
        make_dataset(frames["val"], labels["val"], 256),
    )
    checkpoints = Checkpoints(tmp_path, key="k")
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    train(model, *datasets, cfg, log=lambda _: None, epochs=1, checkpoints=checkpoints)
    restored = build_deepfm(MODEL_FEATURES, stats, cfg)
    optimizer = keras.optimizers.Adam()
    optimizer.build(restored.trainable_variables)
    assert checkpoints.restore(restored, optimizer) is not None
    steps = -(-len(frames["train"]) // cfg.batch_size)
    assert int(optimizer.iterations.numpy()) == steps
    for saved, loaded in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, loaded)
