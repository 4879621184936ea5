"""The logistic-regression baseline is fitted to the optimum of its objective, its L2 strength chosen on validation."""

import numpy as np
import pytest
import tensorflow as tf

from models.baseline import build_logistic, fit_logistic
from models.features import MODEL_FEATURES
from models.frames import compute_feature_stats
from models.inputs import make_dataset, to_tensors
from models.metrics import auc

C_VALUES = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


def _fit(make_data, cfg, n_train, seed, c_values=C_VALUES, noise=0.0):
    frame, labels = make_data(n_train, seed)
    val_frame, val_labels = make_data(max(n_train // 4, 256), seed + 100)
    rng = np.random.default_rng(seed)
    # noise: that share of the labels replaced by coin flips
    flip = rng.random(len(labels)) < noise
    labels = np.where(flip, rng.random(len(labels)) < 0.5, labels).astype(np.float32)
    stats = compute_feature_stats({c: frame[c].to_numpy() for c in frame.columns}, max_buckets=1024)
    model = build_logistic(MODEL_FEATURES, stats, cfg)
    fit = fit_logistic(
        model, make_dataset(frame, labels, 512), make_dataset(val_frame, val_labels, 512), c_values, log=lambda _: None
    )
    return model, fit, frame, labels


def test_the_fitted_weights_are_the_optimum_of_the_penalised_log_loss(make_data, cfg):
    """At the optimum, the gradient of C * summed log loss + |w|^2 / 2 (bias unpenalised) vanishes,
    computed through the Keras model itself: the weights were written back where the SavedModel reads them."""
    model, fit, frame, labels = _fit(make_data, cfg, 2048, seed=1, c_values=(0.5,))
    assert fit.converged and fit.c == 0.5 and fit.iterations > 1
    inputs = to_tensors(frame)
    y = tf.constant(labels.reshape(-1, 1))
    weights = model.trainable_variables
    with tf.GradientTape() as tape:
        logits = tf.math.log(model(inputs)) - tf.math.log1p(-model(inputs))
        loss = fit.c * tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
        penalty = sum(0.5 * tf.reduce_sum(tf.square(v.value)) for v in weights if v.name != "bias")
        objective = loss + penalty
    gradients = tape.gradient(objective, [v.value for v in weights])
    largest = max(float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))) for g in gradients)
    # against the gradient at the start (all weights 0): the objective's slope there is C * |sum(y - 0.5)|-sized
    assert largest < 1e-3 * fit.c * len(labels), largest
    # and it moved: the planted signal is learnt
    assert auc(labels, np.asarray(model(inputs)).ravel()) > 0.8


def test_the_search_regularises_a_small_noisy_sample_more_than_a_large_clean_one(make_data, cfg):
    _, small, _, _ = _fit(make_data, cfg, 300, seed=2, noise=0.6)
    _, large, _, _ = _fit(make_data, cfg, 20_000, seed=3)
    assert small.c < large.c, (small.path, large.path)
    for fit in (small, large):
        tried = [step["c"] for step in fit.path]
        assert tried == sorted(tried) and fit.c in tried
        assert fit.val_logloss == min(step["val_logloss"] for step in fit.path)


def test_an_empty_search_is_refused(make_data, cfg):
    with pytest.raises(ValueError, match="c_values is empty"):
        _fit(make_data, cfg, 256, seed=4, c_values=())
