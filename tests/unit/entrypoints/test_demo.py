"""What the demo simulates: the days it closes and the hours after the last one that closing it needs."""

from __future__ import annotations

from pathlib import Path

from core.config import load_config
from core.raw_logs import RawHour
from entrypoints.demo import demo_days, demo_hours, hourly_run, window_end


def test_the_demo_simulates_the_day_after_the_closed_one_to_the_end_of_its_attribution_window(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    days = demo_days(cfg)
    assert (days[0], days[-1], len(days)) == ("2026-10-26", "2026-11-06", 12)
    assert window_end(cfg, days[-1]) == RawHour("clicks", "2026-11-07", 5)  # the first six hours of 2026-11-07


def test_the_demo_closes_the_first_two_hours_after_the_day_each_in_the_hourly_run_at_the_end_of_its_window(
    tmp_path: Path,
) -> None:
    cfg = load_config(home=tmp_path)
    hours = demo_hours("2026-11-06")
    assert hours == ["2026-11-07T00", "2026-11-07T01"]
    assert window_end(cfg, hours[-1]) == RawHour("clicks", "2026-11-07", 7)  # what the demo simulates of 2026-11-07
    run = hourly_run(cfg, "2026-11-07T01")
    assert (run.dag_id, run.logical_date) == ("pctr_hourly", "2026-11-07T08:00:00+00:00")
