"""Logistic-regression baseline: the first-order terms of DeepFM on the same raw inputs, fitted to convergence.

The baseline is what the promotion gate and every report compare the ranker against, so it is fitted
as a reviewer would fit it: full-batch Newton-CG (scikit-learn) on the one-hot encoding of the model's
own hashed and standardised inputs, its L2 strength chosen on the validation split. Newton-CG, not
L-BFGS: the id columns make the problem ill-conditioned, and on the demo's 790k rows x 11k columns
L-BFGS took 323/291/654 iterations (191 s) for C = 0.01/0.03/0.1 where Newton-CG took 8/2/3 (70 s),
to the same validation loss (6 digits).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from models.features import Feature
from models.frames import FeatureStats
from models.inputs import EncodedFeatures, NumericFields, encode_features, field_vectors

if TYPE_CHECKING:
    from models.hyperparameters import Hyperparameters


@keras.saving.register_keras_serializable(package="pctr")
class SumWithBias(keras.layers.Layer):
    """``(batch, n, 1)`` per-field terms -> their ``(batch, 1)`` sum plus one learned scalar bias."""

    def build(self, input_shape: object) -> None:
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias")

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return ops.sum(inputs, axis=1) + self.bias


# the layers of the first-order part that hold weights (``field_vectors``'s with prefix "linear", the bias)
LINEAR = "linear"
FIRST_ORDER_LAYERS = (f"{LINEAR}_categorical", f"{LINEAR}_numeric", LINEAR)


def linear_logit(encoded: EncodedFeatures, features: Sequence[Feature] | None = None) -> keras.KerasTensor:
    """First-order logit over ``features`` (default: all encoded): a 1-dim embedding per categorical,
    a weight per numeric, one bias."""
    return SumWithBias(name=LINEAR)(field_vectors(encoded, 1, LINEAR, features))


def build_logistic(features: Sequence[Feature], stats: FeatureStats, cfg_train: Hyperparameters) -> keras.Model:
    """Logistic regression over ``features``: input dict keyed by feature name, output ``pctr`` (batch, 1).

    Seeds Keras's global RNG from ``cfg_train.seed`` so that a config always gives the same
    initial weights.
    """
    keras.utils.set_random_seed(cfg_train.seed)
    encoded = encode_features(features, stats)
    pctr = keras.layers.Activation("sigmoid", name="pctr")(linear_logit(encoded))
    return keras.Model(encoded.inputs, pctr, name="logistic")


@dataclass(frozen=True)
class LogisticFit:
    """How the baseline's weights were found: the chosen L2 strength and the search that chose it.

    ``c``: scikit-learn's inverse L2 strength (the log loss is summed over rows, the penalty is
    ``|w|^2 / 2c``, the bias is not penalised). ``columns``: one-hot columns seen in training (the
    weights of the others stay 0). ``path``: per ``c`` tried, its Newton iterations, whether it
    converged and its validation log loss.
    """

    c: float
    iterations: int
    converged: bool
    val_logloss: float
    columns: int
    path: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_logistic(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    c_values: Sequence[float],
    max_iter: int = 1000,
    log: Callable[[str], None] = print,
) -> LogisticFit:
    """Fit ``model`` (from ``build_logistic``) to convergence, its L2 strength chosen on ``val_ds``.

    ``train_ds`` / ``val_ds`` yield ``(features dict, label)`` batches (every row once). The model's
    encoding of them becomes a sparse design matrix, so that the solver optimises exactly the function
    the SavedModel computes, and the solution is written into the model's weights. The ``c_values`` go
    from the strongest penalty to the weakest, each fit starting from the previous solution (strong
    penalties converge in few iterations), and the search stops at the first that does not improve the
    validation log loss, which is unimodal in ``c`` in practice.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from models.metrics import logloss

    if not c_values:
        raise ValueError("c_values is empty")
    layers = _LinearLayers.of(model)
    x_train, y_train = layers.design(train_ds)
    x_val, y_val = layers.design(val_ds)
    # a column no training row touches would get weight 0 from the penalty anyway: leave it out of the solve
    seen = np.flatnonzero(x_train.getnnz(axis=0) > 0)
    x_train, x_val = x_train[:, seen], x_val[:, seen]
    classifier = LogisticRegression(solver="newton-cg", max_iter=max_iter, warm_start=True)
    path: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    previous_c = None
    for c in sorted(c_values):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier.set_params(C=c, tol=_tolerance(classifier, previous_c, c, x_train.shape[0])).fit(
                x_train, y_train
            )
        previous_c = c
        iterations = int(classifier.n_iter_[0])
        val_logloss = logloss(y_val, classifier.predict_proba(x_val)[:, 1])
        path.append({"c": c, "iterations": iterations, "converged": iterations < max_iter, "val_logloss": val_logloss})
        log(f"baseline C={c:g}: {iterations} Newton iterations, val_logloss {val_logloss:.5f}")
        if best and val_logloss >= best["val_logloss"]:
            break
        best = {**path[-1], "coef": classifier.coef_[0].copy(), "intercept": float(classifier.intercept_[0])}
    weights = np.zeros(layers.width, dtype=np.float32)
    weights[seen] = best["coef"]
    layers.set_weights(weights, best["intercept"])
    return LogisticFit(best["c"], best["iterations"], best["converged"], best["val_logloss"], int(seen.size), path)


# The solver stops when no gradient entry of scikit-learn's objective (the mean log loss plus |w|^2 / 2Cn)
# exceeds tol. With L-BFGS, 1e-5 gave the demo day's validation loss to 6 digits in 70% of the iterations.
TOLERANCE = 1e-5


def _tolerance(classifier: Any, previous_c: float | None, c: float, rows: int) -> float:
    """The stopping tolerance of a fit of ``c`` that starts from the solution of ``previous_c``.

    At that start the gradient is only the change of penalty, ``(1/previous_c - 1/c) w / rows``: on
    hundreds of thousands of rows it is below ``TOLERANCE``, and the fit would stop before its first
    step (measured: 0 iterations on 720k rows). It must shrink that gradient tenfold.
    """
    if previous_c is None:
        return TOLERANCE
    start_gradient = (1 / previous_c - 1 / c) * float(np.abs(classifier.coef_).max()) / rows
    return min(TOLERANCE, 0.1 * start_gradient) if start_gradient > 0 else TOLERANCE


@dataclass(frozen=True)
class _LinearLayers:
    """The layers of a ``build_logistic`` model that hold its weights, and its encoding as a design matrix.

    Design matrix columns: one per row of the categorical table (the fields' hashed ids, offset into
    one table), then one per numeric field.
    """

    model: keras.Model
    categorical: keras.layers.Embedding | None
    numeric: NumericFields | None

    @classmethod
    def of(cls, model: keras.Model) -> _LinearLayers:
        names = {layer.name for layer in model.layers}
        categorical, numeric, _ = FIRST_ORDER_LAYERS
        return cls(
            model,
            model.get_layer(categorical) if categorical in names else None,
            model.get_layer(numeric) if numeric in names else None,
        )

    @property
    def categorical_width(self) -> int:
        return self.categorical.input_dim if self.categorical is not None else 0

    @property
    def width(self) -> int:
        return self.categorical_width + (len(self.numeric.columns) if self.numeric is not None else 0)

    def design(self, dataset: tf.data.Dataset) -> tuple[Any, np.ndarray]:
        """Sparse design matrix (float64 CSR) and labels of every row of ``dataset``."""
        import scipy.sparse as sp

        outputs = {}
        if self.categorical is not None:
            outputs["ids"] = self.model.get_layer(f"{LINEAR}_ids").output
        if self.numeric is not None:
            outputs["numeric"] = self.model.get_layer("standardize").output
        encoder = keras.Model(self.model.inputs, outputs)
        parts: dict[str, list[np.ndarray]] = {"ids": [], "numeric": [], "labels": []}
        for features, labels in dataset:
            for name, values in encoder(features, training=False).items():
                parts[name].append(np.asarray(values))
            parts["labels"].append(np.asarray(labels, dtype=np.float64).ravel())
        y = np.concatenate(parts["labels"])
        blocks = []
        if parts["ids"]:
            ids = np.concatenate(parts["ids"])
            rows = np.repeat(np.arange(len(y)), ids.shape[1])
            one_hot = (np.ones(ids.size), (rows, ids.ravel()))
            blocks.append(sp.csr_matrix(one_hot, shape=(len(y), self.categorical_width)))
        if parts["numeric"]:
            blocks.append(sp.csr_matrix(np.concatenate(parts["numeric"])[:, self.numeric.columns].astype(np.float64)))
        return sp.hstack(blocks, format="csr"), y

    def set_weights(self, weights: np.ndarray, intercept: float) -> None:
        """Write a design-matrix weight vector and the bias into the model."""
        split = self.categorical_width
        if self.categorical is not None:
            self.categorical.set_weights([weights[:split].reshape(-1, 1)])
        if self.numeric is not None:
            self.numeric.set_weights([weights[split:].reshape(-1, 1)])
        self.model.get_layer(LINEAR).set_weights([np.array([intercept], dtype=np.float32)])
