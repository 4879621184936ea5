"""Registers pctr's timetables with Airflow, whose scheduler and UI deserialize only registered custom timetables.

Airflow imports this file from its plugins folder (``entrypoints.airflow_local.airflow_env``).
"""

from airflow.plugins_manager import AirflowPlugin

from dags.timetables import ClosedDayTimetable


class PctrTimetables(AirflowPlugin):
    name = "pctr_timetables"
    timetables = [ClosedDayTimetable]
