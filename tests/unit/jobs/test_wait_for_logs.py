"""Which raw hours closing a day needs, and the check that they are complete (tiny simulated homes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import PctrConfig, load_config
from core.io import read_json
from core.layout import Layout
from core.raw_logs import COMPLETE_MARKER, IncompleteLogsError, RawHour, day_hours
from jobs import wait_for_logs
from simulator import logs

DS, BEFORE, AFTER = "2026-03-02", "2026-03-01", "2026-03-03"


def _clicks(ds: str, hours: range) -> list[RawHour]:
    return [RawHour("clicks", ds, h) for h in hours]


def test_a_day_needs_its_impressions_and_its_clicks_to_the_end_of_the_attribution_window(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    assert cfg.join.attribution_window_hours == 6
    needed = wait_for_logs.needed_hours(cfg, DS)
    assert [h for h in needed if h.event == "impressions"] == day_hours("impressions", DS)
    assert [h for h in needed if h.event == "clicks"] == _clicks(DS, range(24)) + _clicks(AFTER, range(6))
    # in the order a producer writes them: each hour's impressions, then its clicks
    assert needed[:3] == [RawHour("impressions", DS, 0), RawHour("clicks", DS, 0), RawHour("impressions", DS, 1)]

    longer = cfg.model_copy(deep=True)
    longer.join.attribution_window_hours = 30
    assert wait_for_logs.needed_hours(longer, DS)[-1] == RawHour("clicks", "2026-03-04", 5)

    # the join reads the impressions of the day before, when there is one (clicks on them are not orphans)
    Layout(cfg.home).raw("impressions", BEFORE).mkdir(parents=True)
    assert wait_for_logs.needed_hours(cfg, DS) == day_hours("impressions", BEFORE) + needed


def test_an_hour_needs_its_days_impressions_up_to_it_and_its_clicks_to_the_end_of_its_window(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    needed = wait_for_logs.needed_hours(cfg, f"{DS}T21")
    assert [h for h in needed if h.event == "impressions"] == day_hours("impressions", DS, through_hour=21)
    # an impression at 21:59 may be clicked until 03:59
    assert [h for h in needed if h.event == "clicks"] == _clicks(DS, range(21, 24)) + _clicks(AFTER, range(4))
    assert wait_for_logs.needed_hours(cfg, f"{DS}T00")[:2] == [RawHour("impressions", DS, 0), RawHour("clicks", DS, 0)]
    with pytest.raises(ValueError, match="YYYY-MM-DDTHH"):
        wait_for_logs.needed_hours(cfg, f"{DS}T5")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> PctrConfig:
    """BEFORE and DS whole, AFTER written through hour 04: DS misses the last hour of its attribution window."""
    cfg = load_config(home=tmp_path_factory.mktemp("home"))
    logs.run(cfg, BEFORE, 3, scale="tiny", until_hour=4)
    return cfg


def test_a_day_is_not_closable_until_the_last_hour_of_its_window_is_complete(home: PctrConfig) -> None:
    assert wait_for_logs.missing_hours(home, DS) == [f"clicks dt={AFTER}/hour=05"]
    assert wait_for_logs.poke(home, DS) is False
    with pytest.raises(IncompleteLogsError) as err:
        wait_for_logs.run(home, DS)
    assert str(err.value) == f"ds={DS} cannot be closed yet: clicks dt={AFTER}/hour=05 not complete"

    assert wait_for_logs.missing_hours(home, BEFORE) == []
    assert wait_for_logs.run(home, BEFORE)["hours"] == 24 + 30


def test_once_the_window_is_written_the_day_is_closable(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    logs.run(cfg, DS, 2, scale="tiny", until_hour=5)
    assert wait_for_logs.poke(cfg, DS) is True
    stats = wait_for_logs.run(cfg, DS)
    assert stats == {"stage": "wait_for_logs", "ds": DS, "hours": 54, "last_hour": f"clicks dt={AFTER}/hour=05"}
    assert read_json(Layout(cfg.home).stage_output("wait_for_logs", DS) / "_stats.json") == stats


def test_logs_without_markers_are_not_complete_and_the_error_says_how_to_fix_them(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    logs.run(cfg, DS, 2, scale="tiny")
    for marker in Layout(cfg.home).raw("impressions").parent.rglob(COMPLETE_MARKER):
        marker.unlink()  # as a simulator older than the markers left them
    missing = wait_for_logs.missing_hours(cfg, DS)
    assert len(missing) == 54 and missing[0] == f"impressions dt={DS}/hour=00"
    with pytest.raises(IncompleteLogsError, match=r"hour=00 not complete \(\+53 more\); .* Re-simulate them"):
        wait_for_logs.run(cfg, DS)


def test_an_hour_still_being_written_is_not_complete(tmp_path: Path) -> None:
    """A file of the hour is there, its marker not yet: the writer may still add files."""
    cfg = load_config(home=tmp_path)
    logs.run(cfg, DS, 2, scale="tiny", until_hour=5)
    marker = RawHour("clicks", DS, 17).path(Layout(cfg.home)) / COMPLETE_MARKER
    marker.unlink()
    assert wait_for_logs.missing_hours(cfg, DS) == [f"clicks dt={DS}/hour=17"]
    with pytest.raises(IncompleteLogsError, match=r"hour=17 not complete$"):
        wait_for_logs.run(cfg, DS)
