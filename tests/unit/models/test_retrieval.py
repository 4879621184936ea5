import keras
import numpy as np
import pytest

from models.features import tower_features
from models.inputs import to_tensors
from models.retrieval import build_two_tower, get_tower, logit_scale_bias


def test_tower_dot_product_is_the_training_logit_up_to_scale_and_bias(stats, cfg, frame):
    model = build_two_tower(stats, cfg)
    # Move scale and bias off their initial values so that the check is not trivially satisfied.
    logit_layer = model.get_layer("logit")
    logit_layer.raw_scale.assign(1.3)
    logit_layer.bias.assign(-0.7)
    scale, bias = logit_scale_bias(model)
    assert (scale, bias) == pytest.approx((np.log1p(np.exp(1.3)), -0.7), rel=1e-6)

    user = np.asarray(get_tower(model, "user")(to_tensors(frame, tower_features("user"))))
    ad = np.asarray(get_tower(model, "ad")(to_tensors(frame, tower_features("ad"))))
    assert user.shape == ad.shape == (len(frame), cfg.retrieval_dim)
    np.testing.assert_allclose(np.linalg.norm(user, axis=1), 1.0, rtol=1e-5)

    logit_model = keras.Model(model.inputs, logit_layer.output)
    features = tower_features("user") + tower_features("ad")
    logit = np.asarray(logit_model(to_tensors(frame, features)))[:, 0]
    np.testing.assert_allclose(logit, scale * np.sum(user * ad, axis=1) + bias, rtol=1e-5, atol=1e-5)

    pctr = np.asarray(model(to_tensors(frame, features)))[:, 0]
    np.testing.assert_allclose(pctr, 1.0 / (1.0 + np.exp(-logit)), rtol=1e-5)


def test_towers_take_only_their_own_features(stats, cfg):
    model = build_two_tower(stats, cfg)
    for tower in ("user", "ad"):
        assert sorted(get_tower(model, tower).input) == sorted(f.name for f in tower_features(tower))
        assert get_tower(model, tower).layers[-1].name == "embedding"
