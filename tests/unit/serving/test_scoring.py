"""The TF Serving backend against a stand-in REST server on loopback that answers as TF Serving does."""

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from core.io import write_json_atomic
from models.calibration import Calibrator
from models.features import BY_NAME, MODEL_FEATURES
from serving.scoring import (
    INPUT_NAMES,
    MODEL_NAME,
    ModelVersionUnavailable,
    TFServingScorer,
    load_scorer,
    score_instances,
)

# slope 1, intercept 0 and no downsampling: the identity
IDENTITY = Calibrator("platt", neg_rate=1.0)
VERSION = 7  # AVAILABLE in the stand-in
LOADING = 8  # still loading in the stand-in; any other version it does not have
VERSIONED = re.compile(rf"/v1/models/{MODEL_NAME}/versions/(\d+)")


class StandIn(BaseHTTPRequestHandler):
    """TF Serving with ``VERSION`` AVAILABLE and ``LOADING`` loading.

    ``GET /v1/models/pctr/versions/N`` answers N's status, 404 for a version it does not have.
    ``POST /v1/models/pctr/versions/N:predict`` checks the row format and answers each row's ``hour / 100``
    as its score, for the AVAILABLE version only (any other path: 404, as TF Serving's).
    """

    received: list[dict] = []
    paths: list[str] = []
    states = {VERSION: "AVAILABLE", LOADING: "LOADING"}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        match = VERSIONED.fullmatch(self.path)
        version = int(match.group(1)) if match else None
        if version in self.states:
            status = {"version": str(version), "state": self.states[version], "status": {"error_code": "OK"}}
            self.answer(200, {"model_version_status": [status]})
        else:
            self.answer(404, {"error": f"Could not find version {version} of model {MODEL_NAME}"})

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StandIn.received.append(body)
        StandIn.paths.append(self.path)
        if self.path != f"/v1/models/{MODEL_NAME}/versions/{VERSION}:predict":
            self.answer(404, {"error": f"Servable not found for request: {self.path}"})
            return
        instances = body["instances"]
        ok = all(
            set(row) == set(INPUT_NAMES) and all(isinstance(v, list) and len(v) == 1 for v in row.values())
            for row in instances
        )
        answer = {"predictions": [[row["hour"][0] / 100] for row in instances]} if ok else {"error": "bad request"}
        self.answer(200 if ok else 400, answer)

    def answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def tf_serving() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


def batch(hours: list[int]) -> dict[str, np.ndarray]:
    """A ranker's batch of spec defaults but for the hour."""
    columns = {f.name: np.full(len(hours), f.default, dtype=f.numpy_dtype) for f in MODEL_FEATURES}
    return columns | {"hour": np.asarray(hours, dtype=np.int64), "ad_bid": np.ones(len(hours))}


def test_rows_go_to_the_bundles_version_in_tf_servings_row_format_and_come_back_calibrated(tf_serving):
    StandIn.received.clear()
    scorer = TFServingScorer(tf_serving, IDENTITY, VERSION)
    np.testing.assert_allclose(scorer.predict(batch([3, 10, 50])), [0.03, 0.1, 0.5])
    assert StandIn.paths[-1] == f"/v1/models/{MODEL_NAME}/versions/{VERSION}:predict"
    rows = StandIn.received[-1]["instances"]
    assert len(rows) == 3 and set(rows[0]) == set(INPUT_NAMES)  # the bid is never sent: it is not a model input
    assert rows[1]["hour"] == [10] and rows[1]["user_id"] == [BY_NAME["user_id"].default]

    calibrator = Calibrator("platt", neg_rate=0.1, slope=1.2, intercept=-0.3)
    scores = TFServingScorer(tf_serving, calibrator, VERSION).predict(batch([3, 10]))
    np.testing.assert_allclose(scores, calibrator.predict(np.array([0.03, 0.1])))


def test_an_error_from_tf_serving_is_raised_with_its_answer(tf_serving):
    scorer = TFServingScorer(tf_serving, IDENTITY, LOADING)  # never scored by another version instead
    with pytest.raises(RuntimeError, match="answered 404: .*Servable not found"):
        scorer.predict(batch([1]))
    assert StandIn.paths[-1] == f"/v1/models/{MODEL_NAME}/versions/{LOADING}:predict"


def test_instances_missing_features_are_scored_with_the_spec_defaults(tf_serving):
    scorer = TFServingScorer(tf_serving, IDENTITY, VERSION)
    scores = score_instances(scorer, [{"hour": 20, "device": "ios"}, {}])
    assert scores == pytest.approx(IDENTITY.predict(np.array([0.2, 0.0])).tolist())  # hour 0 by default
    rows = StandIn.received[-1]["instances"]
    assert rows[1] == {name: [BY_NAME[name].default] for name in INPUT_NAMES}
    assert rows[0]["device"] == ["ios"]


def closed_port_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_only_an_available_version_passes_the_check(tf_serving):
    TFServingScorer(tf_serving, IDENTITY, VERSION).check_available()
    with pytest.raises(ModelVersionUnavailable, match=f"version {LOADING} of model pctr .* is LOADING"):
        TFServingScorer(tf_serving, IDENTITY, LOADING).check_available()
    with pytest.raises(ModelVersionUnavailable, match="answered 404: .*Could not find version 9 of model pctr"):
        TFServingScorer(tf_serving, IDENTITY, 9).check_available()
    with pytest.raises(ModelVersionUnavailable, match="TF Serving did not answer"):
        TFServingScorer(closed_port_url(), IDENTITY, VERSION, timeout_s=1.0).check_available()


def write_bundle(path: Path, **manifest: object) -> Path:
    """The parts of a bundle that the TF Serving backend reads: the calibrator and the manifest."""
    path.mkdir()
    (path / "calibrator.json").write_text(IDENTITY.to_json())
    write_json_atomic(path / "manifest.json", {"version": path.name, **manifest})
    return path


def test_a_bundle_is_scored_by_the_version_it_records_and_refused_if_tf_serving_lacks_it(tf_serving, tmp_path):
    scorer = load_scorer(write_bundle(tmp_path / "v1", model_version="7", tf_serving_version=VERSION), tf_serving)
    assert isinstance(scorer, TFServingScorer) and scorer.version == VERSION
    np.testing.assert_allclose(scorer.predict(batch([20])), [0.2])
    assert StandIn.paths[-1] == f"/v1/models/{MODEL_NAME}/versions/{VERSION}:predict"

    newer = write_bundle(tmp_path / "v2", model_version="9", tf_serving_version=9)
    with pytest.raises(ModelVersionUnavailable, match="version 9 of model pctr"):
        load_scorer(newer, tf_serving)
    loading = write_bundle(tmp_path / "v3", model_version="8", tf_serving_version=LOADING)
    with pytest.raises(ModelVersionUnavailable, match="is LOADING"):
        load_scorer(loading, tf_serving)
