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
    optimizer is built up front so that its state exists by then). Stops early when the validation
    log loss, averaged over all workers so that every worker takes the same decision, has not
    improved for ``early_stopping_patience`` epochs, and restores the best epoch's weights.
    ``epochs`` overrides ``cfg_train.epochs`` (e.g. with ``retrieval_epochs``). With ``checkpoints``
    the chief saves the training state after every epoch and a run that finds a state of the same
    key resumes after its last epoch (every worker reads it; rank 0's copy is broadcast anyway).

    History: the per-epoch ``HISTORY_SERIES`` (``loss`` is rank-local), ``initial_val_logloss`` (before
    the first step, a candidate too: ``best_epoch`` 0 keeps the starting weights), ``best_epoch``,
    ``best_val_logloss``, ``epochs_run``.
    """
    keras.utils.set_random_seed(cfg_train.seed)
    size = hvd.size() if hvd is not None else 1
    is_chief = hvd is None or hvd.rank() == 0
    optimizer = _optimizer(model, cfg_train.learning_rate * size, cfg_train.embedding_weight_decay)
    history: dict[str, Any] = {key: [] for key in HISTORY_SERIES}
    best_epoch, best_weights = 0, model.get_weights()
    resumed = checkpoints.restore(model, optimizer) if checkpoints is not None else None
    if resumed is not None:
        history, best_epoch, best_loss, best_weights = resumed
        if is_chief:
            log(f"resuming after epoch {len(history['loss'])} from {checkpoints.directory}")
    if hvd is not None:
        hvd.broadcast_variables([v.value for v in model.variables + optimizer.variables], root_rank=0)

    train_step = _make_train_step(model, optimizer, hvd)
    val_step = _make_val_step(model)
    n_epochs = cfg_train.epochs if epochs is None else epochs
    if resumed is None:
        # the starting point is a candidate too: a model that starts from a fitted baseline or a warm
        # start keeps it unless training improves on it
        best_loss = history["initial_val_logloss"] = _val_logloss(val_ds, val_step, hvd)
        if is_chief:
            log(f"epoch 0/{n_epochs} val_logloss {best_loss:.5f} (the starting point)")
    patience = cfg_train.early_stopping_patience

    for epoch in range(len(history["loss"]) + 1, n_epochs + 1):
        if epoch - 1 - best_epoch >= patience:  # a resumed run that had already decided to stop
            break
        loss_sum, examples, input_seconds = 0.0, 0, 0.0
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
            waited = time.perf_counter()
        if examples == 0:
            raise ValueError("train_ds yielded no examples")
        seconds = time.perf_counter() - start
        val_loss = _val_logloss(val_ds, val_step, hvd)
        history["loss"].append(loss_sum / examples)
        history["val_logloss"].append(val_loss)
        history["examples"].append(examples * size)
        history["epoch_seconds"].append(seconds)
        history["input_seconds"].append(input_seconds)
        history["examples_per_sec"].append(examples * size / seconds)
        if is_chief:
            log(
                f"epoch {epoch}/{n_epochs} loss {loss_sum / examples:.5f} val_logloss {val_loss:.5f} "
                f"{examples * size / seconds:,.0f} examples/s "
                f"({input_seconds:.1f} of {seconds:.1f} s waiting for batches)"
            )
        if val_loss < best_loss:
            best_loss, best_epoch, best_weights = val_loss, epoch, model.get_weights()
        if checkpoints is not None and is_chief:
            checkpoints.save(model, optimizer, history, best_epoch, best_loss, best_weights)
        if epoch - best_epoch >= patience:
            if is_chief:
                log(f"early stopping after epoch {epoch}; restoring epoch {best_epoch}")
            break

    model.set_weights(best_weights)
    history.update(best_epoch=best_epoch, best_val_logloss=best_loss, epochs_run=len(history["loss"]))
    return history


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
        return tf.reduce_sum(keras.losses.binary_crossentropy(labels, preds))

    return step


def _val_logloss(
    val_ds: tf.data.Dataset, val_step: Callable[[dict[str, tf.Tensor], tf.Tensor], tf.Tensor], hvd: Any
) -> float:
    total = np.zeros(2, dtype=np.float64)  # (sum of losses, examples)
    for features, labels in val_ds:
        total += (float(val_step(features, labels)), int(tf.size(labels)))
    if hvd is not None:
        total = hvd.allreduce(tf.constant(total), op=hvd.Sum, name="val_logloss").numpy()
    if total[1] == 0:
        raise ValueError("val_ds yielded no examples")
    return float(total[0] / total[1])


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
