import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from core.config import load_config
from serving.app import PredictRequest, RankRequest, create_app


@pytest.fixture
def client(tmp_path):
    # not entered as a context manager: no lifespan, so no bundle is ever loaded
    return TestClient(create_app(load_config(home=tmp_path)))


def test_rank_request_fills_context_defaults_from_the_spec():
    request = RankRequest.model_validate({"user_id": "u1", "context": {"device": "ios"}, "slots": 2})
    assert request.context.model_dump() == {"placement": "feed", "device": "ios", "os": "unknown", "country": "unknown"}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"context": {}, "slots": 1}, "user_id"),
        ({"user_id": "", "slots": 1}, "user_id"),
        ({"user_id": "u1", "slots": 0}, "slots"),
        ({"user_id": "u1"}, "slots"),
        ({"user_id": "u1", "slots": 1, "context": {"browser": "x"}}, "browser"),
        ({"user_id": "u1", "slots": 1, "extra": 1}, "extra"),
    ],
)
def test_bad_rank_requests_are_422_naming_the_field(client, body, field):
    response = client.post("/v1/rank", json=body)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])


def test_too_many_slots_is_422(client):
    response = client.post("/v1/rank", json={"user_id": "u1", "slots": 51})
    assert response.status_code == 422
    assert "slots must be <= 50" in response.json()["detail"]


def test_predict_instances_accept_tf_serving_lists_and_bare_values():
    request = PredictRequest.model_validate({"instances": [{"user_id": ["u1"], "hour": 3, "ad_age_days": None}]})
    assert request.rows() == [{"user_id": "u1", "hour": 3}]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"instances": []}, "instances"),
        ({"instances": [{"userid": "u1"}]}, "instances.0.userid"),
        ({"instances": [{"hour": "noon"}]}, "instances.0.hour"),
        ({"instances": [{"hour": [1, 2]}]}, "instances.0.hour"),
        ({"instances": [{}], "signature_name": "other"}, "signature_name"),
    ],
)
def test_bad_predict_requests_are_400_with_a_tf_serving_error(client, body, message):
    response = client.post("/v1/models/pctr:predict", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_before_a_bundle_loads_the_service_is_alive_but_not_ready(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    assert client.post("/v1/rank", json={"user_id": "u1", "slots": 1}).status_code == 503
    assert client.post("/v1/models/pctr:predict", json={"instances": [{}]}).status_code == 503
    assert "error" in client.get("/v1/models/pctr").json()


def test_validation_rejects_wrong_types():
    with pytest.raises(ValidationError):
        RankRequest.model_validate({"user_id": 7, "slots": 1})
