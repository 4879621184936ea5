import json
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.layout import Layout
from models.features import EXPOSURES_FEATURE, FEATURES, batch_features
from serving.app import create_app

pytestmark = pytest.mark.integration

VERSION = "2026-11-20-v1"
CONTEXT = {"placement": "feed", "device": "ios", "os": "ios17", "country": "US"}
PHASES = ("features", "retrieval", "pair_features", "scoring", "auction", "log")


def running_service(make_home, publish, ready, **overrides):
    cfg = make_home(**overrides)
    bundle = publish(cfg, VERSION, "1")
    with TestClient(create_app(cfg)) as client:
        ready(client.get)
        yield SimpleNamespace(cfg=cfg, bundle=bundle, client=client)


@pytest.fixture(scope="module")
def live(make_home, publish, ready):
    yield from running_service(make_home, publish, ready)


@pytest.fixture(scope="module")
def replaying(make_home, publish, ready):
    """The service in replay mode: requests may carry their time."""
    yield from running_service(make_home, publish, ready, replay=True)


def rank(live, user_id, slots=3, **extra):
    response = live.client.post("/v1/rank", json={"user_id": user_id, "context": CONTEXT, "slots": slots, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_status_endpoints(live):
    assert live.client.get("/healthz").json() == {"status": "ok"}
    assert live.client.get("/readyz").json() == {"status": "ready", "version": VERSION, "model_version": "1"}
    assert live.client.get("/v1/models/pctr").json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def test_tf_servings_versioned_routes_answer_for_the_live_model_version_only(live, instances):
    status = live.client.get("/v1/models/pctr/versions/1")
    assert status.json() == live.client.get("/v1/models/pctr").json()
    missing = live.client.get("/v1/models/pctr/versions/2")
    assert (missing.status_code, missing.json()) == (404, {"error": "Could not find version 2 of model pctr"})

    body = {"instances": instances}
    versioned = live.client.post("/v1/models/pctr/versions/1:predict", json=body)
    assert versioned.json() == live.client.post("/v1/models/pctr:predict", json=body).json()
    other = live.client.post("/v1/models/pctr/versions/2:predict", json=body)
    assert other.status_code == 404
    assert other.json() == {"error": "Servable not found for request: Specific(pctr, 2)"}
    refused = live.client.post("/v1/models/pctr/versions/1:predict", json={"instances": []})
    assert refused.status_code == 400 and "instances" in refused.json()["error"]


def test_rank_fills_the_slots_by_ecpm_at_gsp_prices_under_the_rules(live, users):
    reserve = live.cfg.serving.reserve_price
    for user_id in users:
        result = rank(live, user_id)
        assert (result["user_id"], result["model_version"], result["bundle_version"]) == (user_id, "1", VERSION)
        assert result["candidates"] == live.cfg.serving.retrieval_k
        assert result["cold_start"] is False
        assert set(result["timings_ms"]) == {*PHASES, "total"}
        ads = result["ads"]
        assert [a["slot"] for a in ads] == [1, 2, 3]
        ecpm = [a["ecpm"] for a in ads]
        assert ecpm == sorted(ecpm, reverse=True)
        assert len({a["advertiser_id"] for a in ads}) == len(ads)
        for a in ads:
            assert 0.0 < a["pctr"] < 1.0
            assert a["ecpm"] == pytest.approx(1000.0 * a["bid"] * a["pctr"])
            assert reserve <= a["price"] <= a["bid"]
            assert a["explore"] is False
        for winner, runner_up in zip(ads, ads[1:], strict=False):
            assert winner["price"] == pytest.approx(max(reserve, runner_up["ecpm"] / (1000.0 * winner["pctr"])))


def test_an_unknown_user_still_gets_ads(live):
    result = rank(live, "never-seen-before")
    assert result["cold_start"] is True
    assert len(result["ads"]) == 3


def served_records(live) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(Layout(live.cfg.home).served_log.glob("dt=*/*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_an_ad_shown_frequency_cap_times_is_not_shown_again(live):
    assert live.cfg.serving.frequency_cap == 2
    first, second, third = ({a["ad_id"] for a in rank(live, "u-capped", slots=5)["ads"]} for _ in range(3))
    shown_twice = first & second
    assert shown_twice
    assert not third & shown_twice
    # the ranker scored each ad with the user's impressions of it so far today
    exposures: dict[str, list[int]] = {}
    for record in served_records(live):
        if record["user_id"] == "u-capped":
            exposures.setdefault(record["ad_id"], []).append(record["served_features"][EXPOSURES_FEATURE])
    assert {ad: exposures[ad] for ad in shown_twice} == {ad: [0, 1] for ad in shown_twice}


def test_predict_api_matches_the_predictor(live, instances, expected_pctr):
    response = live.client.post("/v1/models/pctr:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert all(len(p) == 1 for p in predictions)
    np.testing.assert_allclose([p[0] for p in predictions], expected_pctr(live.bundle), rtol=1e-6)


def test_served_impressions_are_logged_with_every_feature(live):
    result = rank(live, "u2", request_id="req-served-log")
    lines = served_records(live)
    logged = [r for r in lines if r["request_id"] == "req-served-log"]
    assert [(r["ad_id"], r["position"]) for r in logged] == [(a["ad_id"], a["slot"]) for a in result["ads"]]
    assert [r["pctr_served"] for r in logged] == [a["pctr"] for a in result["ads"]]
    for record in lines:
        assert set(record["served_features"]) == {f.name for f in FEATURES}
        assert record["served_features"]["position"] == live.cfg.serving.default_position
        assert record["model_version"] == "1"
        assert record["user_id"] == record["served_features"]["user_id"]
    assert {k: logged[0]["served_features"][k] for k in CONTEXT} == CONTEXT
    assert len({r["impression_id"] for r in lines}) == len(lines)


def test_a_request_time_is_refused_outside_replay_mode(live):
    body = {"user_id": "u1", "slots": 1, "request_id": "req-stamped", "request_time": "2026-11-07T21:30:00Z"}
    response = live.client.post("/v1/rank", json=body)
    assert response.status_code == 400
    assert "replay mode only" in response.json()["detail"]
    assert not [r for r in served_records(live) if r["request_id"] == "req-stamped"]


def test_in_replay_mode_a_request_time_decides_the_hour_and_the_served_log_day(replaying):
    result = rank(replaying, "u1", request_id="req-replayed", request_time="2026-11-07T21:30:00+02:00")
    day = Layout(replaying.cfg.home).served_log / "dt=2026-11-07"
    logged = [json.loads(line) for path in day.glob("*.jsonl") for line in path.read_text().splitlines()]
    logged = [r for r in logged if r["request_id"] == "req-replayed"]
    assert len(logged) == len(result["ads"]) > 0
    assert {(r["ts"], r["served_features"]["hour"]) for r in logged} == {("2026-11-07T19:30:00.000Z", 19)}
    naive = replaying.client.post("/v1/rank", json={"user_id": "u1", "slots": 1, "request_time": "2026-11-07T10:00:00"})
    assert naive.status_code == 422


def test_in_replay_mode_a_request_dated_yesterday_keeps_todays_caps(replaying):
    today, yesterday = "2026-11-08T10:00:00Z", "2026-11-07T23:59:00Z"
    first, second = ({a["ad_id"] for a in rank(replaying, "u-late", 5, request_time=today)["ads"]} for _ in range(2))
    shown_twice = first & second
    assert shown_twice
    rank(replaying, "u-other", 5, request_time=yesterday)
    third = rank(replaying, "u-late", 5, request_time=today)
    assert not shown_twice & {a["ad_id"] for a in third["ads"]}


def test_each_candidate_is_scored_with_its_users_category_features(live, pair_table):
    """Served pair features are Feast's for (user, the ad's category); absent pairs get the spec defaults."""
    engine = live.client.app.state.engines.live()
    pair = [f.name for f in batch_features("user_category")]
    for user_id in ("u1", "u2", "u4", "never-seen-before"):
        rows = engine.retrieval.candidates(user_id, engine.features.user(user_id)[0])
        categories = engine.ads["ad_category"][rows]
        served = engine.features.online.pairs(user_id, categories)
        known = np.array([(user_id, c) in pair_table.index for c in categories])
        assert (user_id in {"u1", "u2"}) == known.any() and not known.all()
        for name in pair:
            expected = [pair_table.at[(user_id, c), name] if k else 0.0 for c, k in zip(categories, known, strict=True)]
            np.testing.assert_allclose(served[name], expected, rtol=1e-6)
            assert served[name].dtype == np.float32


def test_metrics_count_requests_and_time_each_phase(live):
    def rejected() -> float:
        line = 'pctr_requests_total{endpoint="/v1/rank",status="422"} '
        found = [row for row in live.client.get("/metrics").text.splitlines() if row.startswith(line)]
        return float(found[0].removeprefix(line)) if found else 0.0

    rank(live, "u3")
    before = rejected()
    assert live.client.post("/v1/rank", json={"user_id": "u3"}).status_code == 422
    assert rejected() == before + 1
    text = live.client.get("/metrics").text
    assert 'pctr_requests_total{endpoint="/v1/rank",status="200"}' in text
    assert 'pctr_request_seconds_count{endpoint="/v1/rank"}' in text
    for phase in (*PHASES, "total"):
        assert f'pctr_rank_phase_seconds_count{{phase="{phase}"}}' in text
    assert f'pctr_bundle_info{{model_version="1",version="{VERSION}"}} 1.0' in text
    assert 'pctr_bundle_reloads_total{result="ok"} 1.0' in text
