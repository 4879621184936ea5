"""Logistic-regression baseline: the first-order terms of DeepFM on the same raw inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras
import tensorflow as tf
from keras import ops

from models.features import Feature
from models.frames import FeatureStats
from models.inputs import EncodedFeatures, encode_features, field_vectors

if TYPE_CHECKING:
    from models.hyperparameters import Hyperparameters


@keras.saving.register_keras_serializable(package="pctr")
class SumWithBias(keras.layers.Layer):
    """``(batch, n, 1)`` per-field terms -> their ``(batch, 1)`` sum plus one learned scalar bias."""

    def build(self, input_shape: object) -> None:
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return ops.sum(inputs, axis=1) + self.bias


def linear_logit(encoded: EncodedFeatures, features: Sequence[Feature] | None = None) -> keras.KerasTensor:
    """First-order logit over ``features`` (default: all encoded): a 1-dim embedding per categorical,
    a weight per numeric, one bias."""
    return SumWithBias(name="linear")(field_vectors(encoded, 1, "linear", features))


def build_logistic(features: Sequence[Feature], stats: FeatureStats, cfg_train: Hyperparameters) -> keras.Model:
    """Logistic regression over ``features``: input dict keyed by feature name, output ``pctr`` (batch, 1).

    Seeds Keras's global RNG from ``cfg_train.seed`` so that a config always gives the same
    initial weights.
    """
    keras.utils.set_random_seed(cfg_train.seed)
    encoded = encode_features(features, stats)
    pctr = keras.layers.Activation("sigmoid", name="pctr")(linear_logit(encoded))
    return keras.Model(encoded.inputs, pctr, name="logistic")
