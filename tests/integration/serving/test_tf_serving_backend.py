import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app

pytestmark = pytest.mark.integration


def test_the_ranker_can_run_behind_a_tf_serving_rest_api(
    make_home, publish, server, ready, identity_calibrator, instances, expected_pctr
):
    # Our own app with an identity calibrator returns the ranker's raw scores, as TF Serving would.
    standin = make_home()
    publish(standin, "v1", "1", calibrator=identity_calibrator)
    with server(create_app(standin)) as url:
        ready(lambda path: httpx.get(url + path))
        cfg = make_home(tf_serving_url=url)
        bundle = publish(cfg, "v1", "1")
        with TestClient(create_app(cfg)) as client:
            ready(client.get)
            predictions = client.post("/v1/models/pctr:predict", json={"instances": instances}).json()["predictions"]
            np.testing.assert_allclose([p[0] for p in predictions], expected_pctr(bundle), rtol=1e-6)
            result = client.post("/v1/rank", json={"user_id": "u1", "slots": 3}).json()
            assert len(result["ads"]) == 3
        remote_calls = httpx.get(url + "/metrics").text
        assert 'pctr_requests_total{endpoint="/v1/models/pctr:predict",status="200"}' in remote_calls
