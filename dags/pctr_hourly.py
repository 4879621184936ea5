"""pctr_hourly: the live ranker refreshed on the newest closed hours. Wiring only: the stages of
jobs.pipeline.HOURLY_STAGES (dags.wiring).

The run at T (the end of its data interval) closes the hour whose attribution window ended then: the hour
starting at T - 1 h - window.
It does not catch up (an hourly run per hour since the start date would refresh models nobody serves any
more); backfills of past hours go through the UI or ``airflow backfill create``.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from core.config import load_config
from dags.wiring import wire
from jobs.pipeline import HOURLY_STAGES

cfg = load_config()
orchestration = cfg.orchestration
WINDOW_HOURS = cfg.join.attribution_window_hours
# the end of the interval: the run's time whether the timetable makes intervals or trigger points (Airflow 3's default)
CLOSED_HOUR = (
    "{{ (data_interval_end - macros.timedelta(hours=" + str(WINDOW_HOURS + 1) + ")).strftime('%Y-%m-%dT%H') }}"
)

with DAG(
    dag_id="pctr_hourly",
    description="the newest closed hour -> Spark join -> Feast splits -> champion trained on (Horovod) -> "
    "calibration -> gate -> MLflow (cadence=hourly) -> bundle",
    schedule="@hourly",
    start_date=dt.datetime.fromisoformat(orchestration.start_date).replace(tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=orchestration.max_active_runs,
    default_args={"retries": orchestration.retries, "retry_delay": dt.timedelta(minutes=5)},
    tags=["pctr"],
):
    wire(HOURLY_STAGES, CLOSED_HOUR, orchestration)
