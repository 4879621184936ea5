"""Export of trained models as SavedModels taking raw features, and a numpy loader for them.

``model.export`` writes the signature ``serving_default`` with one input per feature, named as in
the spec, shape ``(None, 1)`` and the spec's dtype (``tf.string`` / ``tf.int64`` / ``tf.float32``),
and one output named ``output_0`` (Keras does not carry the output layer's name into the
signature). TF Serving and ``load_serving_fn`` both use that signature.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from models.frames import as_strings

ServingFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def export_saved_model(model: keras.Model, path: str | Path) -> None:
    """Write ``model`` as a TF SavedModel directory at ``path``."""
    model.export(str(path), format="tf_saved_model", verbose=False)


def load_serving_fn(path: str | Path) -> ServingFn:
    """A function from raw feature arrays to model outputs, backed by the SavedModel at ``path``.

    It takes a mapping of numpy arrays of shape ``(n,)`` or ``(n, 1)`` (keys the signature does not
    use are ignored; missing ones raise ``KeyError``), converts each to the signature's dtype and
    shape (string features via ``as_strings`` then ``tf.constant``: ids passed as numbers hash like
    their string form did in training, and Keras will not take numpy string arrays), and
    returns float32 ``(n,)`` for scoring models or ``(n, d)`` for embedding towers.
    """
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]
    specs: dict[str, tf.TensorSpec] = signature.structured_input_signature[1]
    (output_name,) = signature.structured_outputs  # exactly one output per exported model

    def serve(features: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = sorted(set(specs) - set(features))
        if missing:
            raise KeyError(f"features missing for {path}: {missing}")
        tensors = {name: _to_tensor(features[name], spec) for name, spec in specs.items()}
        out = signature(**tensors)[output_name].numpy()
        out = out.reshape(out.shape[0], -1)
        return out[:, 0] if out.shape[1] == 1 else out

    # Keep the loaded object alive: the signature's variables belong to it.
    serve.saved_model = loaded  # type: ignore[attr-defined]
    return serve


def _to_tensor(values: np.ndarray, spec: tf.TensorSpec) -> tf.Tensor:
    array = np.asarray(values).reshape(-1, 1)
    if spec.dtype == tf.string:
        return tf.constant(as_strings(array), dtype=tf.string)
    return tf.constant(array.astype(spec.dtype.as_numpy_dtype))
