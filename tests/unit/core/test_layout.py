from __future__ import annotations

import datetime as dt

import pytest

from core.layout import day_bounds, ds_range, feature_event_time, parse_ds


def test_feature_event_time_is_inside_ds_and_before_the_next_day() -> None:
    start, end = day_bounds("2026-11-01")
    event = feature_event_time("2026-11-01")
    assert start <= event < end
    assert end - event == dt.timedelta(microseconds=1)
    assert event.tzinfo == dt.UTC


def test_ds_helpers() -> None:
    assert ds_range("2026-10-30", 3) == ["2026-10-30", "2026-10-31", "2026-11-01"]
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_ds("2026/11/01")
