"""MLflow pyfunc wrapper of the ranker, so a registered version can be loaded and scored from MLflow.

The Keras/TensorFlow MLflow flavors reject string inputs, so the model is logged as a custom
``PythonModel`` over the SavedModel and the calibrator JSON, scoring through the same Predictor as
evaluation and the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc


class RankerPyfunc(mlflow.pyfunc.PythonModel):
    """Raw feature columns (spec names) in, calibrated pCTR out."""

    def load_context(self, context: Any) -> None:
        from models.predictor import Predictor

        self._predictor = Predictor.load(Path(context.artifacts["saved_model"]), Path(context.artifacts["calibrator"]))

    # no type hints here: MLflow would try to derive a model signature from them
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        from models.frames import fill_defaults

        return self._predictor.predict(fill_defaults(model_input))
