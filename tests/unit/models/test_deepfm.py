import numpy as np

from models.baseline import FIRST_ORDER_LAYERS, build_logistic
from models.deepfm import build_deepfm, start_from_baseline
from models.features import BY_NAME, MODEL_FEATURES
from models.inputs import make_dataset, to_tensors
from models.training import train


def test_ids_left_out_of_the_interactions_keep_only_a_first_order_weight(stats, cfg, frame):
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    assert not BY_NAME["user_id"].deepfm and not BY_NAME["ad_id"].deepfm
    used = [f for f in MODEL_FEATURES if f.deepfm]
    # the FM and the DNN get rows (and numeric vectors) for the used features alone
    used_buckets = sum(stats.buckets[f.name] for f in used if f.categorical)
    assert model.get_layer("emb_categorical").embeddings.shape == (used_buckets, cfg.embedding_dim)
    assert model.get_layer("emb_numeric").vectors.shape == (sum(not f.categorical for f in used), cfg.embedding_dim)
    assert model.get_layer("fm").input.shape[1:] == (len(used), cfg.embedding_dim)
    assert model.get_layer("dnn_input").output.shape[-1] == len(used) * cfg.embedding_dim
    # the first-order part is the baseline's: every feature, ids included
    all_buckets = sum(stats.buckets[f.name] for f in MODEL_FEATURES if f.categorical)
    assert model.get_layer("linear_categorical").embeddings.shape == (all_buckets, 1)


def test_the_ranker_starts_from_the_baselines_first_order_weights_and_keeps_them(stats, cfg, frame, make_data):
    baseline = build_logistic(MODEL_FEATURES, stats, cfg)
    rng = np.random.default_rng(0)
    for name in FIRST_ORDER_LAYERS:
        layer = baseline.get_layer(name)
        layer.set_weights([rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    model = build_deepfm(MODEL_FEATURES, stats, cfg)
    start_from_baseline(model, baseline)
    # the FM's and the DNN's output weights start at 0: the baseline's scores
    inputs = to_tensors(frame)
    np.testing.assert_allclose(model(inputs), baseline(inputs), rtol=1e-6)

    train_frame, labels = make_data(512, 5)
    history = train(
        model, make_dataset(train_frame, labels, 64, shuffle_seed=1), make_dataset(frame, labels[:256], 256), cfg
    )
    assert history["epochs_run"] >= 1
    for name in FIRST_ORDER_LAYERS:  # frozen: training moved the interactions only
        for trained, fitted in zip(
            model.get_layer(name).get_weights(), baseline.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(trained, fitted)
    # ids still count, through their first-order weights
    other_ids = frame.assign(user_id="someone else", ad_id="another ad")
    assert not np.allclose(model(to_tensors(other_ids)), model(inputs))
