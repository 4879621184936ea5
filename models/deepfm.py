"""DeepFM ranker: first-order terms + FM pairwise interactions + a DNN, over shared field embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras
import tensorflow as tf
from keras import ops

from models.baseline import FIRST_ORDER_LAYERS, linear_logit
from models.features import Feature
from models.frames import FeatureStats
from models.inputs import encode_features, field_vectors

if TYPE_CHECKING:
    from models.hyperparameters import Hyperparameters


@keras.saving.register_keras_serializable(package="pctr")
class FactorizationMachine(keras.layers.Layer):
    """Sum over field pairs of ``<v_i, v_j>``, from ``(batch, F, k)`` field embeddings.

    Uses the O(F k) identity ``0.5 * sum_k((sum_i v_i)^2 - sum_i v_i^2)`` instead of the O(F^2 k)
    pairwise loop.
    """

    def call(self, fields: tf.Tensor) -> tf.Tensor:
        square_of_sum = ops.square(ops.sum(fields, axis=1))
        sum_of_squares = ops.sum(ops.square(fields), axis=1)
        return 0.5 * ops.sum(square_of_sum - sum_of_squares, axis=1, keepdims=True)


def build_deepfm(features: Sequence[Feature], stats: FeatureStats, cfg_train: Hyperparameters) -> keras.Model:
    """DeepFM over ``features``: input dict keyed by feature name, output ``pctr`` (batch, 1).

    The FM and the DNN share the ``embedding_dim`` field embeddings (categorical embeddings and
    numerics projected to ``embedding_dim``); the first-order terms have their own weights. The
    DNN's last layer has no bias because the first-order term already carries the global one.
    Every feature is an input, so that the ranker and the baseline share one signature, but those
    marked ``deepfm=False`` get no weights.
    Seeds Keras's global RNG from ``cfg_train.seed`` so that a config always gives the same
    initial weights.
    """
    keras.utils.set_random_seed(cfg_train.seed)
    encoded = encode_features(features, stats)
    used = [f for f in features if f.deepfm]
    embeddings = field_vectors(encoded, cfg_train.embedding_dim, "emb", used)

    # The FM's and the DNN's terms enter through output weights that start at zero: the untrained model
    # is exactly its first-order part, which may come fitted (``start_from_baseline``).
    fm = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros", name="fm_logit")(
        FactorizationMachine(name="fm")(embeddings)
    )
    hidden = keras.layers.Flatten(name="dnn_input")(embeddings)
    for i, units in enumerate(cfg_train.hidden_units):
        hidden = keras.layers.Dense(units, activation="relu", name=f"dnn_{i}")(hidden)
    dnn = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros", name="dnn_logit")(hidden)

    logit = keras.layers.Add(name="logit")([linear_logit(encoded), fm, dnn])
    pctr = keras.layers.Activation("sigmoid", name="pctr")(logit)
    return keras.Model(encoded.inputs, pctr, name="deepfm")


def start_from_baseline(model: keras.Model, baseline: keras.Model) -> None:
    """Give ``model`` the fitted first-order weights of ``baseline`` (built on the same features and stats), frozen.

    The ranker then learns only what the tuned linear model misses (field interactions). Before its
    first step it predicts what the baseline predicts, and early stopping keeps that start unless an
    epoch beats it: on validation the ranker can only match or beat the baseline.
    """
    names = {layer.name for layer in model.layers}
    for name in FIRST_ORDER_LAYERS:
        if name in names:
            layer = model.get_layer(name)
            layer.set_weights(baseline.get_layer(name).get_weights())
            layer.trainable = False
