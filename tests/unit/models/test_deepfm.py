import numpy as np

from models.deepfm import build_deepfm
from models.features import BY_NAME, MODEL_FEATURES
from models.inputs import to_tensors


def test_features_left_out_of_deepfm_stay_inputs_but_get_no_weights(stats, cfg, frame):
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    assert not BY_NAME["user_id"].deepfm and not BY_NAME["ad_id"].deepfm
    used = [f for f in MODEL_FEATURES if f.deepfm]
    used_buckets = sum(stats.buckets[f.name] for f in used if f.categorical)
    # the FM, the DNN and the linear part get rows (and numeric vectors) for the used features alone
    for prefix, dim in (("emb", cfg.embedding_dim), ("linear", 1)):
        assert model.get_layer(f"{prefix}_categorical").embeddings.shape == (used_buckets, dim)
        assert model.get_layer(f"{prefix}_numeric").vectors.shape == (sum(not f.categorical for f in used), dim)
    assert model.get_layer("fm").input.shape[1:] == (len(used), cfg.embedding_dim)
    assert model.get_layer("dnn_input").output.shape[-1] == len(used) * cfg.embedding_dim

    other_ids = frame.assign(user_id="someone else", ad_id="another ad")
    np.testing.assert_allclose(model(to_tensors(other_ids)), model(to_tensors(frame)), rtol=1e-6)
