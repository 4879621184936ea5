"""Frequency-cap counts in Redis (the suite's redis-server, ``make redis``), each test under its own key prefix."""

import datetime as dt
import time

import pytest
import redis

from serving.frequency_cap import KEY_GRACE, FrequencyCap, RedisCounts, frequency_cap

pytestmark = pytest.mark.integration

TODAY = dt.datetime.now(dt.UTC).date()
YESTERDAY = TODAY - dt.timedelta(days=1)


@pytest.fixture
def client(redis_state):
    client = redis.Redis.from_url(redis_state.redis_url)
    yield client
    client.close()


@pytest.fixture
def counts(redis_state, client) -> RedisCounts:
    return RedisCounts(client, redis_state.redis_key_prefix)


def test_redis_counts_count_per_user_and_ad_and_the_cap_applies(counts):
    cap = FrequencyCap(2, counts)
    cap.record("u", ["a", "b"], TODAY)
    cap.record("u", ["a"], TODAY)
    seen = cap.seen("u", ["a", "b", "c"], TODAY)
    assert seen.dtype == "int64"
    assert seen.tolist() == [2, 1, 0]
    assert cap.allowed(seen).tolist() == [False, True, True]
    assert cap.seen("v", ["a"], TODAY).tolist() == [0]
    assert cap.seen("u", [], TODAY).tolist() == []
    cap.record("u", ["b", "b"], TODAY)  # repeats count again
    assert cap.seen("u", ["b"], TODAY).tolist() == [3]


def test_a_request_of_an_earlier_day_counts_in_its_own_day_and_leaves_today_alone(counts):
    counts.record("u", ["a", "a"], TODAY)
    counts.record("u", ["a"], YESTERDAY)
    assert counts.seen("u", ["a"], TODAY).tolist() == [2]
    assert counts.seen("u", ["a"], YESTERDAY).tolist() == [1]
    counts.record("u", ["a"], TODAY)
    assert counts.seen("u", ["a"], TODAY).tolist() == [3]


def test_a_days_counts_expire_a_grace_after_the_day_ends(counts, client):
    today = dt.datetime.now(dt.UTC).date()
    counts.record("u", ["a"], today)
    end_of_today = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    assert client.pexpiretime(counts.key("u", today)) == int((end_of_today + KEY_GRACE).timestamp() * 1000)


def test_a_day_counted_after_it_ended_expires_a_grace_after_its_last_impression(redis_state, client):
    counts = RedisCounts(client, redis_state.redis_key_prefix, grace=dt.timedelta(seconds=1))
    counts.record("u", ["a"], YESTERDAY)  # a replay's day: it ended before now
    key = counts.key("u", YESTERDAY)
    assert 0 < client.pttl(key) <= 1000
    deadline = time.monotonic() + 10
    while client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not client.exists(key)
    assert counts.seen("u", ["a"], YESTERDAY).tolist() == [0]


def test_two_workers_caps_over_one_redis_see_each_others_impressions(redis_state):
    worker_a, worker_b = frequency_cap(redis_state), frequency_cap(redis_state)
    worker_a.record("u", ["a", "b"], TODAY)
    worker_b.record("u", ["a"], TODAY)
    for worker in (worker_a, worker_b):
        seen = worker.seen("u", ["a", "b"], TODAY)
        assert seen.tolist() == [2, 1]
        assert worker.allowed(seen).tolist() == [False, True]
    elsewhere = frequency_cap(redis_state.model_copy(update={"redis_key_prefix": redis_state.redis_key_prefix + "x"}))
    assert elsewhere.seen("u", ["a"], TODAY).tolist() == [0]  # another prefix, other counts
