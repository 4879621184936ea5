import numpy as np
import pytest
import tensorflow as tf

from models.baseline import build_logistic
from models.deepfm import build_deepfm
from models.export import export_saved_model, load_serving_fn
from models.features import MODEL_FEATURES, tower_features
from models.inputs import to_tensors
from models.retrieval import build_two_tower, get_tower


@pytest.fixture(scope="module")
def models(stats, cfg):
    two_tower = build_two_tower(stats, cfg)
    return {
        "deepfm": (build_deepfm(MODEL_FEATURES, stats, cfg), MODEL_FEATURES),
        "logistic": (build_logistic(MODEL_FEATURES, stats, cfg), MODEL_FEATURES),
        "user_tower": (get_tower(two_tower, "user"), tower_features("user")),
        "ad_tower": (get_tower(two_tower, "ad"), tower_features("ad")),
    }


@pytest.mark.parametrize("name", ["deepfm", "logistic", "user_tower", "ad_tower"])
def test_export_round_trip_takes_raw_features_and_gives_same_outputs(models, name, frame, cfg, tmp_path):
    model, features = models[name]
    expected = np.asarray(model(to_tensors(frame, features)))
    export_saved_model(model, tmp_path / name)

    signature = tf.saved_model.load(str(tmp_path / name)).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    assert {n: (s.dtype.name, tuple(s.shape)) for n, s in specs.items()} == {
        f.name: (f.dtype, (None, 1)) for f in features
    }

    serve = load_serving_fn(tmp_path / name)
    raw = {c: frame[c].to_numpy() for c in frame.columns}  # (n,), extra columns included
    got = serve(raw)
    if name.endswith("tower"):
        assert got.shape == (len(frame), cfg.retrieval_dim)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    else:
        assert got.shape == (len(frame),)
        expected = expected[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(serve({c: v.reshape(-1, 1) for c, v in raw.items()}), got)


def test_serving_fn_hashes_numeric_ids_like_their_string_form(models, frame, tmp_path):
    model, _ = models["logistic"]
    export_saved_model(model, tmp_path / "m")
    serve = load_serving_fn(tmp_path / "m")
    raw = {c: frame[c].to_numpy()[:3] for c in frame.columns}
    as_strings = serve({**raw, "user_id": np.array(["7", "8", "9"], dtype=object)})
    np.testing.assert_array_equal(serve({**raw, "user_id": np.array([7, 8, 9])}), as_strings)
    np.testing.assert_array_equal(serve({**raw, "user_id": np.array([7.0, "8", b"9"], dtype=object)}), as_strings)


def test_serving_fn_names_missing_features(models, frame, tmp_path):
    export_saved_model(models["ad_tower"][0], tmp_path / "ad")
    raw = {c: frame[c].to_numpy() for c in frame.columns if c != "ad_category"}
    with pytest.raises(KeyError, match="ad_category"):
        load_serving_fn(tmp_path / "ad")(raw)


def test_keras_format_round_trip(models, frame, tmp_path):
    import keras

    model, _ = models["deepfm"]
    model.save(tmp_path / "deepfm.keras")
    reloaded = keras.saving.load_model(tmp_path / "deepfm.keras")
    x = to_tensors(frame)
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), rtol=1e-6)
