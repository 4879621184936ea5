import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.io import write_text_atomic
from core.layout import Layout
from serving.app import create_app
from serving.engine import RankingEngine

pytestmark = pytest.mark.integration

REQUEST = {"user_id": "u1", "context": {"placement": "feed"}, "slots": 2}


def test_reload_swaps_bundles_and_refuses_a_tampered_one(make_home, publish, identity_calibrator):
    cfg = make_home()
    with TestClient(create_app(cfg)) as client:
        assert client.get("/readyz").status_code == 503  # nothing published yet
        assert client.post("/v1/rank", json=REQUEST).status_code == 503

        publish(cfg, "v1", "1")
        assert client.post("/admin/reload").json()["version"] == "v1"
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/rank", json=REQUEST).json()["model_version"] == "1"

        publish(cfg, "v2", "2")
        assert client.post("/admin/reload").json() == {"version": "v2", "model_version": "2", "previous": "v1"}
        assert client.post("/v1/rank", json=REQUEST).json()["model_version"] == "2"
        assert client.get("/v1/models/pctr").json()["model_version_status"][0]["version"] == "2"

        tampered = publish(cfg, "v3", "3")
        (tampered / "calibrator.json").write_text(identity_calibrator)
        response = client.post("/admin/reload")
        assert response.status_code == 500
        assert "still serving v2" in response.json()["detail"]
        assert "does not match its manifest: ['calibrator.json'" in response.json()["detail"]
        assert client.get("/readyz").json()["version"] == "v2"
        assert client.post("/v1/rank", json=REQUEST).json()["model_version"] == "2"
        assert 'pctr_bundle_reloads_total{result="error"}' in client.get("/metrics").text

    with pytest.raises(ValueError, match="does not match its manifest"):
        RankingEngine.load(tampered, cfg)


def test_with_a_token_configured_only_its_bearer_may_reload(make_home, publish):
    cfg = make_home(host="0.0.0.0", admin_token=SecretStr("s3cret"))  # make_home copies, it does not validate
    publish(cfg, "v1", "1")
    client = TestClient(create_app(cfg))  # not entered: the bundle loads only through /admin/reload
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/readyz").status_code == 503
    reloaded = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
    assert reloaded.json() == {"version": "v1", "model_version": "1", "previous": None}
    assert client.get("/readyz").json()["version"] == "v1"


def _wait_for_version(client: TestClient, version: str, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while client.get("/readyz").json().get("version") != version:
        assert time.time() < deadline, client.get("/readyz").json()
        time.sleep(0.1)


def test_the_service_follows_current_without_a_reload(make_home, publish, identity_calibrator):
    """A publish, `pctr promote` or `pctr rollback` only replaces CURRENT: the service loads what it names."""
    cfg = make_home(watch_seconds=0.2)
    publish(cfg, "v1", "1")
    with TestClient(create_app(cfg)) as client:
        _wait_for_version(client, "v1")
        publish(cfg, "v2", "2")
        _wait_for_version(client, "v2")
        assert client.post("/v1/rank", json=REQUEST).json()["model_version"] == "2"

        tampered = publish(cfg, "v3", "3")
        (tampered / "calibrator.json").write_text(identity_calibrator)
        time.sleep(1.0)  # several checks of CURRENT: v3 fails to load and v2 keeps serving
        assert client.get("/readyz").json()["version"] == "v2"
        assert client.post("/v1/rank", json=REQUEST).json()["model_version"] == "2"

        write_text_atomic(Layout(cfg.home).current_pointer, "v1\n")  # what a rollback does
        _wait_for_version(client, "v1")


def test_exploration_gives_the_last_slot_to_a_new_ad_at_the_reserve(make_home, publish, ads_table):
    cfg = make_home(exploration_epsilon=1.0)
    engine = RankingEngine.load(publish(cfg, "v1", "1"), cfg, rng=np.random.default_rng(0))
    new_ads = set(ads_table.loc[ads_table["ad_impressions_30d"] < 200, "ad_id"])
    results = [engine.rank(f"explorer-{i}", {}, 3) for i in range(10)]
    explored = [a for r in results for a in r["ads"] if a["explore"]]
    assert explored
    for ad in explored:
        assert (ad["slot"], ad["price"]) == (3, cfg.serving.reserve_price)
        assert ad["ad_id"] in new_ads
    for r in results:
        assert len({a["advertiser_id"] for a in r["ads"]}) == len(r["ads"]) == 3
