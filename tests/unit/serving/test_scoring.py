"""The TF Serving backend against a stand-in REST server on loopback that answers as TF Serving does."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from models.calibration import Calibrator
from models.features import BY_NAME, MODEL_FEATURES
from serving.scoring import INPUT_NAMES, MODEL_NAME, TFServingScorer, score_instances

# slope 1, intercept 0 and no downsampling: the identity
IDENTITY = Calibrator("platt", neg_rate=1.0)


class StandIn(BaseHTTPRequestHandler):
    """``POST /v1/models/pctr:predict``: checks the row format and answers each row's ``hour / 100`` as its score."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StandIn.received.append(body)
        instances = body["instances"]
        ok = self.path == f"/v1/models/{MODEL_NAME}:predict" and all(
            set(row) == set(INPUT_NAMES) and all(isinstance(v, list) and len(v) == 1 for v in row.values())
            for row in instances
        )
        answer = {"predictions": [[row["hour"][0] / 100] for row in instances]} if ok else {"error": "bad request"}
        payload = json.dumps(answer).encode()
        self.send_response(200 if ok else 400)
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


def test_rows_go_in_tf_servings_row_format_and_come_back_calibrated(tf_serving):
    StandIn.received.clear()
    np.testing.assert_allclose(TFServingScorer(tf_serving, IDENTITY).predict(batch([3, 10, 50])), [0.03, 0.1, 0.5])
    rows = StandIn.received[-1]["instances"]
    assert len(rows) == 3 and set(rows[0]) == set(INPUT_NAMES)  # the bid is never sent: it is not a model input
    assert rows[1]["hour"] == [10] and rows[1]["user_id"] == [BY_NAME["user_id"].default]

    calibrator = Calibrator("platt", neg_rate=0.1, slope=1.2, intercept=-0.3)
    scores = TFServingScorer(tf_serving, calibrator).predict(batch([3, 10]))
    np.testing.assert_allclose(scores, calibrator.predict(np.array([0.03, 0.1])))


def test_an_error_from_tf_serving_is_raised_with_its_answer(tf_serving):
    scorer = TFServingScorer(tf_serving + "elsewhere", IDENTITY)
    with pytest.raises(RuntimeError, match="answered 400: .*bad request"):
        scorer.predict(batch([1]))


def test_instances_missing_features_are_scored_with_the_spec_defaults(tf_serving):
    scorer = TFServingScorer(tf_serving, IDENTITY)
    scores = score_instances(scorer, [{"hour": 20, "device": "ios"}, {}])
    assert scores == pytest.approx(IDENTITY.predict(np.array([0.2, 0.0])).tolist())  # hour 0 by default
    rows = StandIn.received[-1]["instances"]
    assert rows[1] == {name: [BY_NAME[name].default] for name in INPUT_NAMES}
    assert rows[0]["device"] == ["ios"]
