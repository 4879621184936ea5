import datetime as dt

import pytest

from core.config import ServingConfig
from serving.frequency_cap import FrequencyCap, InProcessCounts, frequency_cap

DAY = dt.date(2026, 11, 20)
YESTERDAY = DAY - dt.timedelta(days=1)
TOMORROW = DAY + dt.timedelta(days=1)


def test_frequency_cap_counts_per_user_and_ad_and_restarts_each_day():
    cap = FrequencyCap(2, InProcessCounts(max_users=10))
    cap.record("u", ["a", "b"], DAY)
    cap.record("u", ["a"], DAY)
    seen = cap.seen("u", ["a", "b", "c"], DAY)
    assert seen.tolist() == [2, 1, 0]
    assert cap.allowed(seen).tolist() == [False, True, True]
    assert cap.seen("v", ["a"], DAY).tolist() == [0]
    assert cap.seen("u", ["a"], TOMORROW).tolist() == [0]
    assert cap.seen("u", ["a"], DAY).tolist() == [2]  # looking at another day kept today's counts
    cap.record("u", ["a"], TOMORROW)
    assert cap.seen("u", ["a"], TOMORROW).tolist() == [1]


def test_a_request_of_an_earlier_day_neither_resets_nor_rewinds_the_counts():
    counts = InProcessCounts(max_users=10)
    counts.record("u", ["a", "a"], DAY)
    counts.record("v", ["b"], YESTERDAY)
    assert counts.seen("u", ["a"], DAY).tolist() == [2]
    assert counts.seen("v", ["b"], DAY).tolist() == [0]  # yesterday's impression does not cap today
    assert counts.seen("v", ["b"], YESTERDAY).tolist() == [0]
    counts.record("u", ["a"], DAY)
    assert counts.seen("u", ["a"], DAY).tolist() == [3]


def test_beyond_its_size_the_user_served_least_recently_is_forgotten():
    counts = InProcessCounts(max_users=2)
    counts.record("u1", ["a"], DAY)
    counts.record("u2", ["a"], DAY)
    counts.record("u1", ["b"], DAY)  # u1 is now the most recently served
    counts.record("u3", ["a"], DAY)
    assert [counts.seen(user, ["a"], DAY).tolist() for user in ("u1", "u2", "u3")] == [[1], [0], [1]]
    counts.record("u4", ["a"], DAY)
    assert [counts.seen(user, ["a", "b"], DAY).tolist() for user in ("u1", "u3", "u4")] == [[0, 0], [1, 0], [1, 0]]


def test_a_request_that_served_nothing_takes_no_place_among_the_users():
    counts = InProcessCounts(max_users=1)
    counts.record("u", ["a"], DAY)
    counts.record("empty-handed", [], DAY)
    assert counts.seen("u", ["a"], DAY).tolist() == [1]


def test_the_configured_cap_keeps_the_configured_number_of_users():
    cap = frequency_cap(ServingConfig(frequency_cap=4, frequency_cap_max_users=3))
    for user in ("u1", "u2", "u3", "u4"):
        cap.record(user, ["a"], DAY)
    assert cap.cap == 4
    assert [cap.seen(user, ["a"], DAY).tolist() for user in ("u1", "u2", "u4")] == [[0], [1], [1]]


@pytest.mark.parametrize("build", [lambda: FrequencyCap(0, InProcessCounts(1)), lambda: InProcessCounts(0)])
def test_a_cap_and_a_size_under_one_are_refused(build):
    with pytest.raises(ValueError, match="must be >= 1"):
        build()
