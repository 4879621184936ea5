"""Model inputs built from the feature spec, with the preprocessing baked into the model.

Every model takes RAW features (the spec's names and dtypes, shape ``(batch, 1)``): hashing and
standardisation happen inside the graph, so the exported SavedModel needs nothing else at serving
time. Missing values are not handled in the graph; every caller goes through ``fill_defaults``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops

from models.features import MODEL_FEATURES, Feature
from models.frames import FeatureStats

SHUFFLE_BUFFER = 200_000


def to_tensors(frame: pd.DataFrame, features: Sequence[Feature] = MODEL_FEATURES) -> dict[str, tf.Tensor]:
    """The model's input dict, ``(n, 1)`` tensors of the spec's dtypes, from a ``fill_defaults`` frame."""
    return {f.name: tf.constant(frame[f.name].to_numpy().reshape(-1, 1), dtype=f.dtype) for f in features}


def make_dataset(
    frame: pd.DataFrame,
    labels: np.ndarray,
    batch_size: int,
    features: Sequence[Feature] = MODEL_FEATURES,
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Batched ``(features dict, label)`` dataset from a ``fill_defaults`` frame; shuffled if seeded.

    Shuffling permutes the rows once (splits are in time order) and then reshuffles each epoch
    through a buffer of at most ``SHUFFLE_BUFFER`` rows: a buffer of the whole split would hold a
    second copy of it.
    """
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(frame))
        frame, labels = frame.iloc[order], labels[order]
    ds = tf.data.Dataset.from_tensor_slices((to_tensors(frame, features), tf.constant(labels)))
    if shuffle_seed is not None:
        ds = ds.shuffle(min(len(frame), SHUFFLE_BUFFER), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@keras.saving.register_keras_serializable(package="pctr")
class Standardize(keras.layers.Layer):
    """The numeric fields as one ``(batch, n)`` block: ``(x - mean) / std`` per column, after ``log1p`` where ``log``.

    Takes the list of ``(batch, 1)`` raw inputs; the statistics are constants of the graph. One layer
    for all numerics, not one per feature: a training step's cost here is the number of ops, not their size.
    """

    def __init__(self, mean: Sequence[float], variance: Sequence[float], log: Sequence[bool], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.variance = [float(v) for v in variance]
        self.log = [bool(flag) for flag in log]
        # A feature constant in training would otherwise blow up any different value at serving.
        self._std = np.array([math.sqrt(v) if v > 1e-12 else 1.0 for v in self.variance], dtype=np.float32)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        x = ops.concatenate([ops.cast(column, "float32") for column in inputs], axis=1)
        if any(self.log):
            x = ops.where(np.array(self.log), ops.log1p(ops.maximum(x, 0.0)), x)
        return (x - np.array(self.mean, dtype=np.float32)) / self._std

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "mean": self.mean, "variance": self.variance, "log": self.log}


@keras.saving.register_keras_serializable(package="pctr")
class FieldIds(keras.layers.Layer):
    """Hashed ids of several fields as ``(batch, n)`` rows of one shared table (field i's ids plus ``offsets[i]``)."""

    def __init__(self, offsets: Sequence[int], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.offsets = [int(o) for o in offsets]

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        return ops.concatenate([ids + offset for ids, offset in zip(inputs, self.offsets, strict=True)], axis=1)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "offsets": self.offsets}


@keras.saving.register_keras_serializable(package="pctr")
class NumericFields(keras.layers.Layer):
    """``(batch, n)`` standardised values -> ``(batch, n, dim)`` field vectors: value i times a learned vector ``v_i``.

    No bias, so a zero value contributes nothing, as in FM. ``columns`` picks the block's columns to use.
    """

    def __init__(self, columns: Sequence[int], dim: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]
        self.dim = int(dim)

    def build(self, input_shape: object) -> None:
        # Embedding's default initializer: Dense's glorot init on a (1, dim) kernel gives vectors ~20x
        # larger, and the FM sum over pairs of dozens of such fields saturates the sigmoid.
        self.vectors = self.add_weight(shape=(len(self.columns), self.dim), initializer="uniform", name="vectors")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        values = ops.take(inputs, self.columns, axis=1)
        return ops.expand_dims(values, -1) * self.vectors

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "columns": self.columns, "dim": self.dim}


@dataclass(frozen=True)
class EncodedFeatures:
    """Raw ``keras.Input``s and their in-model encodings.

    hashed: categorical name -> ``(batch, 1)`` int64 bucket id.
    numeric: the ``(batch, len(numeric_names))`` float32 block of standardised values (None without numerics).
    numeric_names: the block's columns, in spec order.
    buckets: categorical name -> its number of hash buckets (rows of its embedding tables).
    """

    features: tuple[Feature, ...]
    inputs: dict[str, keras.KerasTensor]
    hashed: dict[str, keras.KerasTensor]
    numeric: keras.KerasTensor | None
    numeric_names: tuple[str, ...]
    buckets: dict[str, int]


def encode_features(features: Sequence[Feature], stats: FeatureStats) -> EncodedFeatures:
    """One raw input per feature, hashed (categoricals, into ``stats.buckets``) or standardised (numerics).

    int64 categoricals go through the same ``Hashing`` layer, which hashes their decimal string
    form: ``position=3`` and ``position="3"`` share a bucket.
    """
    inputs = {f.name: keras.Input(shape=(1,), dtype=f.dtype, name=f.name) for f in features}
    hashed = {
        f.name: keras.layers.Hashing(num_bins=stats.buckets[f.name], name=f"hash_{f.name}")(inputs[f.name])
        for f in features
        if f.categorical
    }
    numerics = [f for f in features if not f.categorical]
    numeric = None
    if numerics:
        numeric = Standardize(
            [stats.mean[f.name] for f in numerics],
            [stats.variance[f.name] for f in numerics],
            [f.transform == "log_norm" for f in numerics],
            name="standardize",
        )([inputs[f.name] for f in numerics])
    buckets = {name: stats.buckets[name] for name in hashed}
    return EncodedFeatures(tuple(features), inputs, hashed, numeric, tuple(f.name for f in numerics), buckets)


def field_vectors(
    encoded: EncodedFeatures, dim: int, prefix: str, features: Sequence[Feature] | None = None
) -> keras.KerasTensor:
    """The ``(batch, n_fields, dim)`` vectors of ``features`` (default: all encoded): categoricals first, then numerics.

    Categoricals look up rows of one embedding table (``{prefix}_categorical``) that holds every
    field's buckets; a numeric field is its standardised value times a learned ``dim`` vector
    (``{prefix}_numeric``). With ``dim=1`` these are the first-order weights of a linear model.
    """
    chosen = encoded.features if features is None else tuple(features)
    categorical = [f.name for f in chosen if f.categorical]
    numeric = [encoded.numeric_names.index(f.name) for f in chosen if not f.categorical]
    blocks = []
    if categorical:
        offsets = np.cumsum([0] + [encoded.buckets[name] for name in categorical])
        ids = FieldIds(offsets[:-1].tolist(), name=f"{prefix}_ids")([encoded.hashed[name] for name in categorical])
        blocks.append(keras.layers.Embedding(int(offsets[-1]), dim, name=f"{prefix}_categorical")(ids))
    if numeric:
        blocks.append(NumericFields(numeric, dim, name=f"{prefix}_numeric")(encoded.numeric))
    return blocks[0] if len(blocks) == 1 else keras.layers.Concatenate(axis=1, name=f"{prefix}_fields")(blocks)
