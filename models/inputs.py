"""Model inputs built from the feature spec, with the preprocessing baked into the model.

Every model takes RAW features (the spec's names and dtypes, shape ``(batch, 1)``): hashing and
standardisation happen inside the graph, so the exported SavedModel needs nothing else at serving
time. Missing values are not handled in the graph; every caller goes through ``fill_defaults``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops

from models.features import MODEL_FEATURES, Feature

SHUFFLE_BUFFER = 200_000


# Hash buckets per distinct training value: room for the values that appear after training (new ads,
# advertisers) with few collisions, while a field of three placements gets a table of MIN_BUCKETS rows,
# not the id fields' hundreds of thousands (dense optimizer updates touch every row, every step).
BUCKETS_PER_VALUE = 8
MIN_BUCKETS = 16


@dataclass(frozen=True)
class FeatureStats:
    """What the model's preprocessing learns from the training rows.

    mean, variance: of each numeric feature after its transform's log1p (if any).
    buckets: hash buckets of each categorical feature, sized from its distinct training values.
    """

    mean: dict[str, float]
    variance: dict[str, float]
    buckets: dict[str, int]

    def to_dict(self) -> dict[str, dict[str, float] | dict[str, int]]:
        return {"mean": dict(self.mean), "variance": dict(self.variance), "buckets": dict(self.buckets)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> FeatureStats:
        return cls(mean=dict(data["mean"]), variance=dict(data["variance"]), buckets=dict(data["buckets"]))


def _log1p_clipped(values: np.ndarray) -> np.ndarray:
    # Counts and ages are never negative; clipping keeps a stray negative from turning into NaN.
    return np.log1p(np.maximum(values, 0.0))


def hash_buckets(distinct_values: int, max_buckets: int) -> int:
    """Buckets for a categorical with ``distinct_values`` in training: a power of two, at most ``max_buckets``."""
    wanted = max(MIN_BUCKETS, BUCKETS_PER_VALUE * distinct_values)
    return min(max_buckets, 1 << (wanted - 1).bit_length())


def compute_feature_stats(
    columns: Mapping[str, np.ndarray], features: Sequence[Feature] = MODEL_FEATURES, *, max_buckets: int
) -> FeatureStats:
    """Preprocessing statistics of ``features`` from (default-filled) training columns.

    Raises on non-finite numeric values: a NaN here would silently poison every prediction of the model.
    """
    mean: dict[str, float] = {}
    variance: dict[str, float] = {}
    buckets: dict[str, int] = {}
    for feature in features:
        if feature.categorical:
            distinct = pd.unique(np.asarray(columns[feature.name]).ravel()).size
            buckets[feature.name] = hash_buckets(distinct, max_buckets)
            continue
        values = np.asarray(columns[feature.name], dtype=np.float64).ravel()
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"{feature.name}: empty or non-finite values; call fill_defaults first")
        if feature.transform == "log_norm":
            values = _log1p_clipped(values)
        mean[feature.name] = float(values.mean())
        variance[feature.name] = float(values.var())
    return FeatureStats(mean=mean, variance=variance, buckets=buckets)


def fill_defaults(frame: pd.DataFrame, features: Sequence[Feature] = MODEL_FEATURES) -> pd.DataFrame:
    """Copy of ``frame`` with nulls in the spec's columns replaced by spec defaults, cast to spec dtypes.

    Strings become Python ``str`` in object columns (what ``tf.constant`` accepts); other columns
    are left untouched. A spec column that is missing altogether raises: that is a bug upstream,
    not a missing value.
    """
    missing = [f.name for f in features if f.name not in frame.columns]
    if missing:
        raise KeyError(f"columns missing from frame: {missing}")
    out = frame.copy()
    for feature in features:
        column = out[feature.name]
        # astype(object) first so that a default of another type (e.g. "" in a numeric column) fits.
        filled = column.astype(object).where(column.notna(), feature.default)
        if feature.dtype == "string":
            out[feature.name] = as_strings(filled.to_numpy())
        else:
            out[feature.name] = filled.astype(feature.numpy_dtype)
    return out


def as_strings(values: np.ndarray) -> np.ndarray:
    """Object array of ``str`` for a string feature's values, whatever type they arrived as.

    Numbers become their decimal form, integral floats as ints: an int id column with nulls reaches
    pandas as float64, and 12.0 must hash like 12. Bytes are decoded as UTF-8. Serving converts
    with this too, so an id hashes to the same bucket however it is passed.
    """
    values = np.asarray(values)
    if values.dtype.kind in "iuU":
        return values.astype(str).astype(object)
    if values.dtype.kind == "O" and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values  # the common case, checked in C, not per element in Python
    return np.array([_as_string(v) for v in values.ravel()], dtype=object).reshape(values.shape)


def _as_string(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


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
