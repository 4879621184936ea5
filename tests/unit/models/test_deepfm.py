import numpy as np

from models.deepfm import build_deepfm
from models.features import BY_NAME, MODEL_FEATURES
from models.inputs import to_tensors


def test_features_left_out_of_deepfm_stay_inputs_but_get_no_weights(stats, cfg, frame):
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    layers = {layer.name for layer in model.layers}
    assert not BY_NAME["user_id"].deepfm and not BY_NAME["ad_id"].deepfm
    for feature in MODEL_FEATURES:
        assert (f"emb_{feature.name}" in layers) == feature.deepfm, feature.name
        assert (f"linear_{feature.name}" in layers) == feature.deepfm, feature.name
    used = sum(f.deepfm for f in MODEL_FEATURES)
    assert len(model.get_layer("fm").input) == used
    assert model.get_layer("dnn_input").output.shape[-1] == used * cfg.embedding_dim

    other_ids = frame.assign(user_id="someone else", ad_id="another ad")
    np.testing.assert_allclose(model(to_tensors(other_ids)), model(to_tensors(frame)), rtol=1e-6)
