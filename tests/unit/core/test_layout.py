from __future__ import annotations

import datetime as dt

import pytest

from core.layout import day_bounds, ds_range, feature_event_time, feature_window, parse_ds


def test_features_of_a_day_exist_once_its_attribution_window_and_the_lag_have_passed() -> None:
    delay = dt.timedelta(hours=7)
    end_of_day = day_bounds("2026-11-01")[1]
    event = feature_event_time("2026-11-01", delay)
    assert event == end_of_day + delay - dt.timedelta(microseconds=1)
    assert event.tzinfo == dt.UTC
    # materialising the day's window loads them
    start, end = feature_window("2026-11-01", delay)
    assert start <= event < end and end == end_of_day + delay


def test_ds_helpers() -> None:
    assert ds_range("2026-10-30", 3) == ["2026-10-30", "2026-10-31", "2026-11-01"]
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_ds("2026/11/01")
