"""wait_for_logs: a run's first task; a day (or an hour) can be closed once every raw hour its join reads is complete.

The join of ds reads (``needed_hours``, in the order a producer writes them):
- the impressions of ds-1, if that day exists: clicks on them that arrive on ds are not orphans;
- the impressions of ds, hours 00-23;
- the clicks from ds 00:00 to the end of the attribution window after ds: an impression at 23:59 may be
  clicked until then (with a 6-hour window, up to and including hour 05 of the next day).
The join of an hour H of day D (``pctr_hourly``) reads the same with H in place of the day's end: the
impressions of D-1 and of D up to and including H (a user's earlier exposures that day count as features,
and an earlier copy makes one in H a duplicate), and the clicks from H to the end of H's window.
Conversions are not read. An hour is complete when the log writer has put its completion marker there
(``core.raw_logs.COMPLETE_MARKER``); an hour without one is not read as complete, whatever it holds.

In Airflow this is a sensor in reschedule mode that calls ``poke``; ``run`` (the local runner, ``pctr
wait-for-logs``) checks once and raises :class:`core.raw_logs.IncompleteLogsError` naming the first
missing hour.
"""

from __future__ import annotations

import datetime as dt
import logging

from core.config import PctrConfig
from core.io import Stats, write_stats
from core.layout import Layout, period_bounds, period_day, shift_ds
from core.raw_logs import RawHour, day_hours, incomplete_hours, require_complete

log = logging.getLogger(__name__)


def needed_hours(cfg: PctrConfig, ds: str) -> list[RawHour]:
    """Every raw hour the join of a day or an hour (``ds``) reads, in the order they are written (see the module
    docstring)."""
    day = period_day(ds)
    previous = shift_ds(day, -1)
    hours = day_hours("impressions", previous) if Layout(cfg.home).raw("impressions", previous).exists() else []
    start, end = period_bounds(ds)
    labels_until = end + dt.timedelta(hours=cfg.join.attribution_window_hours)
    hours += day_hours("impressions", day, through_hour=start.hour - 1) if start.hour else []
    at = start
    while at < labels_until:
        if at < end:
            hours.append(RawHour("impressions", day, at.hour))
        hours.append(RawHour("clicks", at.date().isoformat(), at.hour))
        at += dt.timedelta(hours=1)
    return hours


def missing_hours(cfg: PctrConfig, ds: str) -> list[str]:
    """The hours that ds needs and that are not complete yet, first missing first (``clicks dt=D/hour=HH``)."""
    return [str(hour) for hour in incomplete_hours(Layout(cfg.home), needed_hours(cfg, ds))]


def require_closable(cfg: PctrConfig, ds: str) -> list[RawHour]:
    """The hours that ds needs; raises :class:`core.raw_logs.IncompleteLogsError` naming the first incomplete one."""
    hours = needed_hours(cfg, ds)
    require_complete(Layout(cfg.home), hours, f"ds={ds} cannot be closed yet")
    return hours


def poke(cfg: PctrConfig, ds: str) -> bool:
    """Whether ds can be closed now (the sensor's check); logs the first missing hour if not."""
    missing = missing_hours(cfg, ds)
    if missing:
        log.info("ds=%s: %d raw hours not complete yet, the first %s", ds, len(missing), missing[0])
    return not missing


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Check once that every hour ds needs is complete; raise naming the first that is not."""
    hours = require_closable(cfg, ds)
    stats: Stats = {"stage": "wait_for_logs", "ds": ds, "hours": len(hours), "last_hour": str(hours[-1])}
    return write_stats(Layout(cfg.home).stage_output("wait_for_logs", ds), stats)
