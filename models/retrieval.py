"""Two-tower retrieval: user and ad towers mapping their features to L2-normalised vectors.

The training model scores a (user, ad) impression as ``sigmoid(scale * <u, a> + bias)`` and is
trained on click labels with binary cross-entropy, like the ranker. Because ``scale`` is positive
(see ``ScaledDot``), ranking ads by the dot product of the standalone towers' embeddings is the
same as ranking by the training model's score, which is what lets serving put the ad embeddings in
a FAISS inner-product index.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import keras
import tensorflow as tf
from keras import ops

from models.features import tower_features
from models.frames import FeatureStats
from models.inputs import encode_features, field_vectors

if TYPE_CHECKING:
    from models.hyperparameters import Hyperparameters

Tower = Literal["user", "ad"]


@keras.saving.register_keras_serializable(package="pctr")
class ScaledDot(keras.layers.Layer):
    """``scale * <u, a> + bias`` for two ``(batch, d)`` unit vectors, giving a ``(batch, 1)`` logit.

    The dot of unit vectors lies in [-1, 1], too narrow a logit range for CTRs of a few percent,
    hence the learned scale. It is parametrised as ``softplus(raw)`` so that it stays positive and
    the towers' dot product keeps the order of the scores.
    """

    def __init__(self, initial_scale: float = 5.0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.initial_scale = float(initial_scale)

    def build(self, input_shape: object) -> None:
        raw = math.log(math.expm1(self.initial_scale))  # softplus^-1(initial_scale)
        self.raw_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(raw), name="raw_scale")
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    @property
    def scale(self) -> tf.Tensor:
        return ops.softplus(self.raw_scale)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        user, ad = inputs
        return self.scale * ops.sum(user * ad, axis=1, keepdims=True) + self.bias

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "initial_scale": self.initial_scale}


def _build_tower(tower: Tower, stats: FeatureStats, cfg_train: Hyperparameters) -> keras.Model:
    encoded = encode_features(tower_features(tower), stats)
    fields = keras.layers.Flatten(name=f"{tower}_fields")(
        field_vectors(encoded, cfg_train.embedding_dim, f"{tower}_emb")
    )
    hidden = fields
    for i, units in enumerate(cfg_train.hidden_units):
        hidden = keras.layers.Dense(units, activation="relu", name=f"{tower}_dense_{i}")(hidden)
    # The skip connection from the fields keeps the vector non-zero when every last ReLU is off for
    # an input; a zero vector has no direction, so it would normalise to 0 and match no ad at all.
    skip = keras.layers.Concatenate(name=f"{tower}_skip")([fields, hidden])
    projected = keras.layers.Dense(cfg_train.retrieval_dim, name=f"{tower}_projection")(skip)
    embedding = keras.layers.UnitNormalization(name="embedding")(projected)
    return keras.Model(encoded.inputs, embedding, name=f"{tower}_tower")


def build_two_tower(stats: FeatureStats, cfg_train: Hyperparameters) -> keras.Model:
    """Training model over the user and ad tower features: input dict by name, output ``pctr`` (batch, 1).

    The towers are nested models (layers ``user_tower`` / ``ad_tower``); get them with
    ``get_tower``. Seeds Keras's global RNG from ``cfg_train.seed`` so that a config always gives
    the same initial weights.
    """
    keras.utils.set_random_seed(cfg_train.seed)
    towers = {tower: _build_tower(tower, stats, cfg_train) for tower in ("user", "ad")}
    inputs = {
        f.name: keras.Input(shape=(1,), dtype=f.dtype, name=f.name)
        for tower in ("user", "ad")
        for f in tower_features(tower)
    }
    vectors = [model({f.name: inputs[f.name] for f in tower_features(tower)}) for tower, model in towers.items()]
    logit = ScaledDot(name="logit")(vectors)
    pctr = keras.layers.Activation("sigmoid", name="pctr")(logit)
    return keras.Model(inputs, pctr, name="two_tower")


def get_tower(model: keras.Model, tower: Tower) -> keras.Model:
    """The standalone ``tower`` model of a two-tower training model: its features in, ``embedding`` out.

    It shares weights with ``model``, so it reflects any training done since.
    """
    return model.get_layer(f"{tower}_tower")


def logit_scale_bias(model: keras.Model) -> tuple[float, float]:
    """The learned ``(scale, bias)`` with ``logit = scale * <user_emb, ad_emb> + bias``."""
    layer = model.get_layer("logit")
    return float(ops.convert_to_numpy(layer.scale)), float(ops.convert_to_numpy(layer.bias))
