"""Scoring backends: calibrated pCTR of the ranker's batch, in process or from TF Serving.

In process, the bundle's ``ranker/`` SavedModel runs through ``models.predictor.Predictor`` (the
predictor evaluation uses). With ``cfg.serving.tf_serving_url`` the SavedModel runs in TF Serving
behind its REST API (``TFServingScorer``), as the version the bundle's manifest names
(``core.bundle.tf_serving_version``): requests name that version, and a bundle whose version TF Serving
does not report AVAILABLE is refused at load. Either way the bundle's calibrator is applied here, to
the scores of the ranker it was fitted to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.bundle import read_manifest, tf_serving_version
from models.features import MODEL_FEATURES

if TYPE_CHECKING:
    from models.calibration import Calibrator

MODEL_NAME = "pctr"  # the model's name in the TF Serving REST API
INPUT_NAMES = tuple(f.name for f in MODEL_FEATURES)  # the SavedModel's signature


class Scorer(Protocol):
    """Calibrated pCTR of rows given as spec-named columns (``models.predictor.Predictor`` is one)."""

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray: ...


class ModelVersionUnavailable(RuntimeError):
    """TF Serving does not serve the model version a bundle expects (yet), or does not answer."""


class TFServingScorer:
    """Version ``version`` of the ranker behind TF Serving's REST API, with the calibrator applied here.

    TF Serving serves the bundle's ``ranker/`` SavedModel, whose outputs are raw scores. Requests
    name the version, never TF Serving's latest: after a reload TF Serving may already serve a newer
    ranker, whose scores this calibrator was not fitted to. Instances go in TF Serving's row format,
    each value a one-element list: the signature's inputs are ``(None, 1)``.
    """

    def __init__(self, url: str, calibrator: Calibrator, version: int, timeout_s: float = 5.0) -> None:
        import httpx

        self.version = version
        self.status_url = f"{url.rstrip('/')}/v1/models/{MODEL_NAME}/versions/{version}"
        self.url = f"{self.status_url}:predict"
        self.calibrator = calibrator
        self._client = httpx.Client(timeout=timeout_s)

    def check_available(self) -> None:
        """Raise ``ModelVersionUnavailable`` unless TF Serving answers that the version is AVAILABLE."""
        import httpx

        where = f"version {self.version} of model {MODEL_NAME} at {self.status_url}"
        try:
            response = self._client.get(self.status_url)
        except httpx.HTTPError as err:
            raise ModelVersionUnavailable(f"{where}: TF Serving did not answer: {err!r}") from err
        if response.status_code != 200:  # 404 for a version it has not loaded, or has unloaded
            raise ModelVersionUnavailable(f"{where}: TF Serving answered {response.status_code}: {response.text[:500]}")
        try:
            states = {str(s["version"]): s["state"] for s in response.json()["model_version_status"]}
        except (ValueError, KeyError, TypeError) as err:
            raise ModelVersionUnavailable(f"{where}: not a model status: {response.text[:500]}") from err
        state = states.get(str(self.version), "missing")
        if state != "AVAILABLE":
            raise ModelVersionUnavailable(f"{where} is {state} in TF Serving, not AVAILABLE")

    def close(self) -> None:
        self._client.close()

    def predict(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Calibrated pCTRs; raises ``RuntimeError`` if TF Serving answers anything but 200."""
        values = {name: np.asarray(columns[name]).tolist() for name in INPUT_NAMES}
        n = len(values[INPUT_NAMES[0]])
        instances = [{name: [values[name][i]] for name in INPUT_NAMES} for i in range(n)]
        response = self._client.post(self.url, json={"instances": instances})
        if response.status_code != 200:
            raise RuntimeError(f"TF Serving at {self.url} answered {response.status_code}: {response.text[:500]}")
        scores = np.asarray(response.json()["predictions"], dtype=np.float64).reshape(n)
        return self.calibrator.predict(scores)


def load_scorer(bundle: Path, tf_serving_url: str | None) -> Scorer:
    """The bundle's ranker and calibrator: in process, or behind TF Serving at ``tf_serving_url`` if set.

    Behind TF Serving, raises ``ModelVersionUnavailable`` unless the version the bundle expects is
    AVAILABLE there: an engine on that bundle must not go live.
    """
    from models.calibration import Calibrator
    from models.predictor import Predictor

    calibrator = Calibrator.from_json((bundle / "calibrator.json").read_text())
    if tf_serving_url:
        scorer = TFServingScorer(tf_serving_url, calibrator, tf_serving_version(read_manifest(bundle)))
        try:
            scorer.check_available()
        except ModelVersionUnavailable:
            scorer.close()
            raise
        return scorer
    return Predictor(bundle / "ranker", calibrator)


def score_instances(scorer: Scorer, instances: Sequence[Mapping[str, Any]]) -> list[float]:
    """Calibrated pCTRs of rows of raw spec-named features (missing ones take the spec defaults)."""
    import pandas as pd

    from models.frames import fill_defaults

    filled = fill_defaults(pd.DataFrame.from_records(list(instances), columns=list(INPUT_NAMES)))
    return scorer.predict({name: filled[name].to_numpy() for name in INPUT_NAMES}).tolist()
