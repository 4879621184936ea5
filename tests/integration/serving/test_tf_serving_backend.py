"""The service scoring through a remote TF Serving: our own app, serving raw scores, stands in for it."""

import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app

pytestmark = pytest.mark.integration

VERSIONED_PREDICT = 'endpoint="/v1/models/pctr/versions/{version:int}:predict"'


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
        # every call named version 1 (the stand-in answers no other), none went to TF Serving's latest
        remote_calls = httpx.get(url + "/metrics").text
        assert f'pctr_requests_total{{{VERSIONED_PREDICT},status="200"}}' in remote_calls
        assert "/v1/models/pctr:predict" not in remote_calls
        assert f'{VERSIONED_PREDICT},status="404"' not in remote_calls


def test_a_bundle_whose_version_tf_serving_lacks_is_refused_and_the_old_one_keeps_serving(
    make_home, publish, server, ready, identity_calibrator, instances
):
    standin = make_home()
    publish(standin, "v1", "1", calibrator=identity_calibrator)
    with server(create_app(standin)) as url:
        ready(lambda path: httpx.get(url + path))
        cfg = make_home(tf_serving_url=url)
        publish(cfg, "v1", "1")
        with TestClient(create_app(cfg)) as client:
            ready(client.get)
            before = client.post("/v1/models/pctr:predict", json={"instances": instances}).json()["predictions"]

            publish(cfg, "v2", "2")  # TF Serving still serves version 1 only
            response = client.post("/admin/reload")
            assert response.status_code == 500
            detail = response.json()["detail"]
            assert "still serving v1" in detail and "ModelVersionUnavailable" in detail
            assert "version 2 of model pctr" in detail and "Could not find version 2 of model pctr" in detail
            assert client.get("/readyz").json()["version"] == "v1"
            assert client.post("/v1/rank", json={"user_id": "u1", "slots": 2}).json()["model_version"] == "1"
            after = client.post("/v1/models/pctr:predict", json={"instances": instances}).json()["predictions"]
            assert after == before
            assert 'pctr_bundle_reloads_total{result="error"} 1.0' in client.get("/metrics").text

            publish(standin, "v2", "2", calibrator=identity_calibrator)  # TF Serving now has version 2
            assert httpx.post(url + "/admin/reload").status_code == 200
            assert client.post("/admin/reload").json() == {"version": "v2", "model_version": "2", "previous": "v1"}
            assert client.post("/v1/rank", json={"user_id": "u1", "slots": 2}).json()["model_version"] == "2"


def test_an_unreachable_tf_serving_keeps_a_bundle_from_going_live(make_home, publish, server):
    with server(create_app(make_home())) as url:
        pass  # stopped: nothing listens there any more
    cfg = make_home(tf_serving_url=url)
    publish(cfg, "v1", "1")
    client = TestClient(create_app(cfg))  # not entered: the bundle loads only through /admin/reload
    response = client.post("/admin/reload")
    assert response.status_code == 500
    assert "TF Serving did not answer" in response.json()["detail"]
    assert client.get("/readyz").status_code == 503


def _wait_for_version(client: TestClient, version: str, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while client.get("/readyz").json().get("version") != version:
        assert time.time() < deadline, client.get("/readyz").json()
        time.sleep(0.1)


def test_following_current_a_bundle_goes_live_once_tf_serving_has_its_version(
    make_home, publish, server, ready, identity_calibrator
):
    """TF Serving may load a version after CURRENT names its bundle: the service waits for it on the old one."""
    standin = make_home()
    publish(standin, "v1", "1", calibrator=identity_calibrator)
    with server(create_app(standin)) as url:
        ready(lambda path: httpx.get(url + path))
        cfg = make_home(tf_serving_url=url, watch_seconds=0.2)
        publish(cfg, "v1", "1")
        with TestClient(create_app(cfg)) as client:
            _wait_for_version(client, "v1")
            publish(cfg, "v2", "2")
            time.sleep(1.0)  # several checks of CURRENT: v2 is refused and v1 keeps serving
            assert client.get("/readyz").json()["version"] == "v1"
            assert 'pctr_bundle_reloads_total{result="error"}' in client.get("/metrics").text

            publish(standin, "v2", "2", calibrator=identity_calibrator)
            assert httpx.post(url + "/admin/reload").status_code == 200
            _wait_for_version(client, "v2")  # no reload asked for
