"""The training loop run by every Horovod worker (and, with ``hvd=None``, by a single process).

A custom ``tf.function`` step rather than ``model.fit``: Horovod's ``DistributedGradientTape`` and
Keras callbacks fail on Keras 3 variables ("'Variable' object has no attribute 'ref'"), so the step
takes gradients with respect to the underlying ``tf.Variable``s (``v.value``) and averages them
with ``hvd.allreduce`` itself.

Every worker must see the same number of training batches per epoch (shard, then pass
``steps_per_epoch``), otherwise the allreduce of the longer workers waits forever.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from models.hyperparameters import Hyperparameters

LOG_EVERY_STEPS = 200
# per-epoch series of a history: examples, epoch_seconds and examples_per_sec count all workers together;
# input_seconds is the time this worker waited for its next batch
HISTORY_SERIES = ("loss", "val_logloss", "examples", "epoch_seconds", "input_seconds", "examples_per_sec")


def train(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    cfg_train: Hyperparameters,
    hvd: Any = None,
    log: Callable[[str], None] = print,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[str, Any]:
    """Train ``model`` (sigmoid output) with Adam on binary cross-entropy; return the history.

    ``train_ds`` / ``val_ds`` yield ``(features dict, label)`` batches, already sharded per worker.
    ``hvd`` is the ``horovod.tensorflow`` module or None. The learning rate is scaled by the number
    of workers; rank 0's weights and optimizer state are broadcast before the first step (the
    optimizer is built up front so that its state exists by then). ``epochs`` overrides
    ``cfg_train.epochs`` (e.g. with ``retrieval_epochs``).

    Early stopping: the validation log loss is checked ``validations_per_epoch`` times an epoch (when
    the epoch's length is known), so that on small data training can stop inside an epoch. A check
    becomes the best only when its loss is lower than the best's by ``min_improvement_z`` standard
    errors of the paired per-example difference (its ``z``): on a small validation set a lower loss by
    chance does not move the model away from a better-regularised earlier point. Training stops
    after ``early_stopping_patience`` epochs' worth of checks without a new best and restores the
    best's weights. The figures are summed over all workers, so that every worker takes the same decision.

    With ``checkpoints`` the chief saves the training state after every epoch (and where early stopping
    ended it) and a run that finds a state of the same key resumes after its last epoch (every worker
    reads it; rank 0's copy is broadcast anyway): after a crash, or to train on to a larger ``epochs``.

    History: the per-epoch ``HISTORY_SERIES`` (``loss`` is rank-local; ``val_logloss`` at the epoch's
    end), ``checks`` (every validation: ``epoch`` as a fraction, ``val_logloss``, ``z`` of its gain over
    the best so far), ``initial_val_logloss`` (before the first step, a candidate too: ``best_epoch`` 0
    keeps the starting weights), ``best_epoch`` (in epochs, a fraction when inside one),
    ``best_val_logloss``, ``epochs_run``.
    """
    keras.utils.set_random_seed(cfg_train.seed)
    size = hvd.size() if hvd is not None else 1
    is_chief = hvd is None or hvd.rank() == 0
    optimizer = _optimizer(model, cfg_train.learning_rate * size, cfg_train.embedding_weight_decay)
    history: dict[str, Any] = {key: [] for key in HISTORY_SERIES} | {"checks": []}
    validation = _Validation(model, val_ds, hvd)
    best_epoch, best_weights = 0.0, model.get_weights()
    resumed = checkpoints.restore(model, optimizer) if checkpoints is not None else None
    if resumed is not None:
        history, best_epoch, best_loss, best_weights = resumed
        if is_chief:
            log(f"resuming after epoch {len(history['loss'])} from {checkpoints.directory}")
    if hvd is not None:
        hvd.broadcast_variables([v.value for v in model.variables + optimizer.variables], root_rank=0)

    train_step = _make_train_step(model, optimizer, hvd)
    n_epochs = cfg_train.epochs if epochs is None else epochs
    if resumed is None:
        # the starting point is a candidate too: a model that starts from a fitted baseline or a warm
        # start keeps it unless training improves on it
        best_loss = history["initial_val_logloss"] = validation.start_from(model.get_weights())
        if is_chief:
            log(f"epoch 0/{n_epochs} val_logloss {best_loss:.5f} (the starting point)")
    else:
        validation.start_from(best_weights)
    steps = steps_per_epoch or _known_length(train_ds)
    checks_per_epoch = cfg_train.validations_per_epoch if steps else 1
    patience_checks = cfg_train.early_stopping_patience * checks_per_epoch

    def checks_since_best(position: float) -> int:
        return round((position - best_epoch) * checks_per_epoch)

    def validate(position: float) -> tuple[float, float]:
        """The validation loss at ``position`` (in epochs) and its gain in standard errors; keep it if it is a best."""
        nonlocal best_loss, best_epoch, best_weights
        val_loss, z = validation.check(position, history)
        if z > cfg_train.min_improvement_z:
            best_loss, best_epoch, best_weights = val_loss, position, model.get_weights()
            validation.accept()
        return val_loss, z

    for epoch in range(len(history["loss"]) + 1, n_epochs + 1):
        if checks_since_best(epoch - 1) >= patience_checks:  # a resumed run that had already decided to stop
            break
        # the steps after which to validate inside the epoch (its end is validated anyway)
        inner_checks = {round(steps * k / checks_per_epoch): k for k in range(1, checks_per_epoch)}
        loss_sum, examples, input_seconds, stopped_inside = 0.0, 0, 0.0, False
        batches = iter(train_ds if steps_per_epoch is None else train_ds.take(steps_per_epoch))
        start = waited = time.perf_counter()
        for step, (features, labels) in enumerate(batches, start=1):
            input_seconds += time.perf_counter() - waited
            loss, n = train_step(features, labels)
            loss_sum += float(loss) * int(n)
            examples += int(n)
            if is_chief and step % LOG_EVERY_STEPS == 0:
                rate = examples * size / (time.perf_counter() - start)
                log(f"epoch {epoch} step {step} loss {loss_sum / examples:.5f} {rate:,.0f} examples/s")
            if step in inner_checks:
                position = epoch - 1 + inner_checks[step] / checks_per_epoch
                val_loss, z = validate(position)
                if is_chief:
                    log(f"epoch {epoch}/{n_epochs} check {inner_checks[step]}/{checks_per_epoch} "
                        f"val_logloss {val_loss:.5f} (gain {z:+.1f} standard errors)")  # fmt: skip
                if checks_since_best(position) >= patience_checks:
                    stopped_inside = True
                    break
            waited = time.perf_counter()
        if examples == 0:
            raise ValueError("train_ds yielded no examples")
        seconds = time.perf_counter() - start
        val_loss, z = (val_loss, z) if stopped_inside else validate(float(epoch))
        history["loss"].append(loss_sum / examples)
        history["val_logloss"].append(val_loss)
        history["examples"].append(examples * size)
        history["epoch_seconds"].append(seconds)
        history["input_seconds"].append(input_seconds)
        history["examples_per_sec"].append(examples * size / seconds)
        if is_chief:
            log(
                f"epoch {epoch}/{n_epochs} loss {loss_sum / examples:.5f} val_logloss {val_loss:.5f} "
                f"(gain {z:+.1f} standard errors) {examples * size / seconds:,.0f} examples/s "
                f"({input_seconds:.1f} of {seconds:.1f} s waiting for batches)"
            )
        if checkpoints is not None and is_chief:
            checkpoints.save(model, optimizer, history, best_epoch, best_loss, best_weights)
        if checks_since_best(history["checks"][-1]["epoch"]) >= patience_checks:
            if is_chief:
                log(f"early stopping in epoch {epoch}; restoring epoch {best_epoch:g}")
            break

    model.set_weights(best_weights)
    history.update(best_epoch=best_epoch, best_val_logloss=best_loss, epochs_run=len(history["loss"]))
    return history


def _known_length(dataset: tf.data.Dataset) -> int | None:
    """The number of batches of ``dataset`` if TensorFlow knows it without reading it (a generator's it does not)."""
    length = int(dataset.cardinality())
    return length if length > 0 else None


class _Validation:
    """The validation split's per-example log losses of the best model so far, and the paired test against them.

    A candidate's gain is the mean of (best's loss - candidate's loss) per example, in standard errors of
    that mean. Each worker keeps its own shard's losses (the validation datasets are read in the same
    order every time); the sums behind the mean and its standard error are summed over the workers.
    """

    def __init__(self, model: keras.Model, val_ds: tf.data.Dataset, hvd: Any) -> None:
        self._model, self._val_ds, self._hvd = model, val_ds, hvd
        self._step = _make_val_step(model)
        self._best: np.ndarray | None = None
        self._last: np.ndarray | None = None

    def start_from(self, weights: list[np.ndarray]) -> float:
        """Make ``weights`` the best so far (the model keeps its own); return their validation log loss."""
        current = self._model.get_weights()
        self._model.set_weights(weights)
        self._best = self._losses()
        self._model.set_weights(current)
        total_loss, n = self._sum(np.stack([self._best, np.ones_like(self._best)]))
        return float(total_loss / n)

    def check(self, position: float, history: dict[str, Any]) -> tuple[float, float]:
        """The model's validation log loss and its gain over the best in standard errors, recorded in ``history``."""
        assert self._best is not None, "start_from first"
        self._last = self._losses()
        gain = self._best - self._last
        total_loss, total_gain, total_gain_squared, n = self._sum(
            np.stack([self._last, gain, gain * gain, np.ones_like(gain)])
        )
        mean = total_gain / n
        standard_error = math.sqrt(max(total_gain_squared / n - mean * mean, 0.0) / n)
        # no spread at all: the same predictions, no evidence either way
        z = mean / standard_error if standard_error > 0 else 0.0
        val_loss = float(total_loss / n)
        history["checks"].append({"epoch": round(position, 4), "val_logloss": val_loss, "z": round(float(z), 3)})
        return val_loss, z

    def accept(self) -> None:
        """The last checked model is the new best."""
        self._best = self._last

    def _losses(self) -> np.ndarray:
        # a worker may hold no validation rows (fewer row groups than workers): the sums count the others'
        losses = [self._step(features, labels).numpy() for features, labels in self._val_ds]
        return np.concatenate(losses).astype(np.float64) if losses else np.zeros(0)

    def _sum(self, rows: np.ndarray) -> np.ndarray:
        """Each row summed over its examples and over the workers."""
        total = rows.sum(axis=1)
        if self._hvd is not None:
            total = self._hvd.allreduce(tf.constant(total), op=self._hvd.Sum, name="validation").numpy()
        if total[-1] == 0:
            raise ValueError("val_ds yielded no examples")
        return total


def _optimizer(model: keras.Model, learning_rate: float, embedding_weight_decay: float) -> keras.optimizers.Optimizer:
    """Adam, or AdamW decaying the field-vector tables (``emb_*``) alone; built for the model's trainable weights."""
    if not embedding_weight_decay:
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    else:
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=embedding_weight_decay)
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if not v.path.startswith("emb_")]
        )
    optimizer.build(model.trainable_variables)
    return optimizer


def trial_summary(history: dict[str, Any]) -> dict[str, Any]:
    """What a search's record shows of one trial's training."""
    return {key: history[key] for key in ("initial_val_logloss", "best_epoch", "epochs_run")}


def examples_per_second(history: dict[str, Any]) -> float:
    """Training examples per second of all workers together over whole epochs (validation excluded)."""
    return round(sum(history["examples"]) / sum(history["epoch_seconds"]), 1)


def _make_train_step(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, hvd: Any
) -> Callable[[dict[str, tf.Tensor], tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    trainable = model.trainable_variables
    loss_fn = keras.losses.BinaryCrossentropy()

    # reduce_retracing: the last, smaller batch would otherwise trace a second graph.
    @tf.function(reduce_retracing=True)
    def step(features: dict[str, tf.Tensor], labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        labels = tf.reshape(tf.cast(labels, tf.float32), (-1, 1))
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(features, training=True))
        grads = tape.gradient(loss, [v.value for v in trainable])
        if hvd is not None:
            # One grouped allreduce of dense tensors: embedding gradients are IndexedSlices, which Horovod
            # would allgather table by table, and the optimizer densifies them anyway (the tables are
            # sized to their features); one group is negotiated once per step, not once per variable.
            grads = hvd.grouped_allreduce([tf.convert_to_tensor(g) for g in grads], op=hvd.Average)
        optimizer.apply_gradients(zip(grads, trainable, strict=True))
        return loss, tf.shape(labels)[0]

    return step


def _make_val_step(model: keras.Model) -> Callable[[dict[str, tf.Tensor], tf.Tensor], tf.Tensor]:
    @tf.function(reduce_retracing=True)
    def step(features: dict[str, tf.Tensor], labels: tf.Tensor) -> tf.Tensor:
        labels = tf.reshape(tf.cast(labels, tf.float32), (-1, 1))
        preds = model(features, training=False)
        return keras.losses.binary_crossentropy(labels, preds)

    return step


@dataclass(frozen=True)
class Checkpoints:
    """The resumable state of one training run: ``state.json`` names the latest ``epoch-NNN.npz``.

    The npz holds the model weights, the optimizer's variables (Adam's moments and step count) and the
    best epoch's weights; the JSON, written last and atomically, is what makes an epoch's state count.
    ``key`` identifies the run (configuration and data): a state with another key is ignored, so a
    rerun on new data or settings never resumes from a stale one.
    """

    directory: Path
    key: str

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def epochs_done(self) -> int:
        """How many epochs the saved state of this run holds (0 without one)."""
        if not self.state_path.exists():
            return 0
        state = json.loads(self.state_path.read_text())
        return len(state["history"]["loss"]) if state["key"] == self.key else 0

    def save(
        self, model: keras.Model, optimizer: keras.optimizers.Optimizer, history: dict[str, Any], best_epoch: int,
        best_loss: float, best_weights: list[np.ndarray],
    ) -> None:  # fmt: skip
        self.directory.mkdir(parents=True, exist_ok=True)
        epoch = len(history["loss"])
        arrays = {
            **{f"model_{i}": w for i, w in enumerate(model.get_weights())},
            **{f"optimizer_{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)},
            **{f"best_{i}": w for i, w in enumerate(best_weights)},
        }
        name = f"epoch-{epoch:03d}.npz"
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, self.directory / name)
        state = {"key": self.key, "file": name, "history": history, "best_epoch": best_epoch, "best_loss": best_loss}
        tmp = self.directory / ".state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)
        for old in self.directory.glob("epoch-*.npz"):
            if old.name != name:
                old.unlink()

    def restore(
        self, model: keras.Model, optimizer: keras.optimizers.Optimizer
    ) -> tuple[dict[str, Any], int, float, list[np.ndarray]] | None:
        """Load the saved state into ``model`` and ``optimizer``; None (and nothing loaded) if there is none."""
        if not self.state_path.exists():
            return None
        state = json.loads(self.state_path.read_text())
        if state["key"] != self.key:
            return None
        with np.load(self.directory / state["file"]) as saved:
            model.set_weights([saved[f"model_{i}"] for i in range(len(model.weights))])
            for i, variable in enumerate(optimizer.variables):
                variable.assign(saved[f"optimizer_{i}"])
            best_weights = [saved[f"best_{i}"] for i in range(len(model.weights))]
        return state["history"], state["best_epoch"], state["best_loss"], best_weights
