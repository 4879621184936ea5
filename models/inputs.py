"""Model inputs built from the feature spec, with the preprocessing baked into the model.

Every model takes RAW features (the spec's names and dtypes, shape ``(batch, 1)``): hashing and
standardisation happen inside the graph, so the exported SavedModel needs nothing else at serving
time. Missing values are not handled in the graph; every caller goes through ``fill_defaults``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops

from models.features import MODEL_FEATURES, Feature

SHUFFLE_BUFFER = 200_000


@dataclass(frozen=True)
class FeatureStats:
    """Mean and variance of each numeric feature after its transform's log1p (if any)."""

    mean: dict[str, float]
    variance: dict[str, float]

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {"mean": dict(self.mean), "variance": dict(self.variance)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, float]]) -> FeatureStats:
        return cls(mean=dict(data["mean"]), variance=dict(data["variance"]))


def _log1p_clipped(values: np.ndarray) -> np.ndarray:
    # Counts and ages are never negative; clipping keeps a stray negative from turning into NaN.
    return np.log1p(np.maximum(values, 0.0))


def compute_feature_stats(
    columns: Mapping[str, np.ndarray], features: Sequence[Feature] = MODEL_FEATURES
) -> FeatureStats:
    """Standardisation statistics of the numeric ``features`` from (default-filled) training columns.

    Raises on non-finite values: a NaN here would silently poison every prediction of the model.
    """
    mean: dict[str, float] = {}
    variance: dict[str, float] = {}
    for feature in features:
        if feature.categorical:
            continue
        values = np.asarray(columns[feature.name], dtype=np.float64).ravel()
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"{feature.name}: empty or non-finite values; call fill_defaults first")
        if feature.transform == "log_norm":
            values = _log1p_clipped(values)
        mean[feature.name] = float(values.mean())
        variance[feature.name] = float(values.var())
    return FeatureStats(mean=mean, variance=variance)


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
    """``(x - mean) / std``, after ``log1p`` when ``log``; the statistics are constants of the graph."""

    def __init__(self, mean: float, variance: float, log: bool, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.variance = float(variance)
        self.log = bool(log)
        # A feature constant in training would otherwise blow up any different value at serving.
        self._std = math.sqrt(self.variance) if self.variance > 1e-12 else 1.0

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = ops.cast(inputs, "float32")
        if self.log:
            x = ops.log1p(ops.maximum(x, 0.0))
        return (x - self.mean) / self._std

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "mean": self.mean, "variance": self.variance, "log": self.log}


@dataclass(frozen=True)
class EncodedFeatures:
    """Raw ``keras.Input``s and their in-model encodings, in spec order.

    hashed: categorical name -> ``(batch, 1)`` int64 bucket id.
    numeric: numeric name -> ``(batch, 1)`` float32 standardised value.
    """

    features: tuple[Feature, ...]
    inputs: dict[str, keras.KerasTensor]
    hashed: dict[str, keras.KerasTensor]
    numeric: dict[str, keras.KerasTensor]
    hash_buckets: int


def encode_features(features: Sequence[Feature], stats: FeatureStats, hash_buckets: int) -> EncodedFeatures:
    """One raw input per feature, hashed (categoricals) or standardised (numerics).

    int64 categoricals go through the same ``Hashing`` layer, which hashes their decimal string
    form: ``position=3`` and ``position="3"`` share a bucket.
    """
    inputs: dict[str, keras.KerasTensor] = {}
    hashed: dict[str, keras.KerasTensor] = {}
    numeric: dict[str, keras.KerasTensor] = {}
    for feature in features:
        raw = keras.Input(shape=(1,), dtype=feature.dtype, name=feature.name)
        inputs[feature.name] = raw
        if feature.categorical:
            hashed[feature.name] = keras.layers.Hashing(num_bins=hash_buckets, name=f"hash_{feature.name}")(raw)
        else:
            numeric[feature.name] = Standardize(
                stats.mean[feature.name],
                stats.variance[feature.name],
                log=feature.transform == "log_norm",
                name=f"std_{feature.name}",
            )(raw)
    return EncodedFeatures(tuple(features), inputs, hashed, numeric, hash_buckets)


def field_vectors(
    encoded: EncodedFeatures, dim: int, prefix: str, features: Sequence[Feature] | None = None
) -> list[keras.KerasTensor]:
    """One ``(batch, dim)`` vector per field of ``features`` (default: all encoded), in spec order.

    Categoricals look up their own ``dim``-wide embedding table; a numeric field is its
    standardised value times a learned ``dim`` vector (no bias, so a zero value contributes
    nothing, as in FM). With ``dim=1`` these are the first-order weights of a linear model.
    """
    vectors: list[keras.KerasTensor] = []
    for feature in encoded.features if features is None else features:
        name = f"{prefix}_{feature.name}"
        if feature.categorical:
            emb = keras.layers.Embedding(encoded.hash_buckets, dim, name=name)(encoded.hashed[feature.name])
            vectors.append(keras.layers.Reshape((dim,), name=f"{name}_flat")(emb))
        else:
            # Embedding's default initializer: Dense's glorot init on a (1, dim) kernel gives vectors
            # ~20x larger, and the FM sum over pairs of dozens of such fields saturates the sigmoid.
            project = keras.layers.Dense(dim, use_bias=False, kernel_initializer="uniform", name=name)
            vectors.append(project(encoded.numeric[feature.name]))
    return vectors
