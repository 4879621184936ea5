"""pctr_daily's timetable: a run per day, made once the day has ended, whose logical date is that day."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.timetables.base import DataInterval
from airflow.timetables.interval import CronDataIntervalTimetable

if TYPE_CHECKING:
    from pendulum import DateTime


class ClosedDayTimetable(CronDataIntervalTimetable):
    """Data intervals of a cron schedule ("@daily": midnight to midnight, UTC); a run's logical date, ``{{ ds }}``,
    is the start of the interval it closes, and a scheduled run is made at its end.

    A run triggered by hand at logical date D (the UI's Trigger, ``airflow dags test D``) closes D too, as a
    scheduled or backfilled run of D does. Airflow's own data-interval timetable gives it the interval that
    ends at D, and its scheduler, finding that run at its next logical date D, computes the next run from that
    interval: D again, and catch-up stops there. Airflow 3's "@daily" (a trigger timetable) has no such
    collision, but its logical date is the run's own time: the run at midnight would close the day just starting.
    """

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        start = self._align_to_prev(run_after)
        return DataInterval(start=start, end=self._get_next(start))
