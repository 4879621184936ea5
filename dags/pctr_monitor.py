"""pctr_monitor: checks of what is served, every hour and after every publish. Wiring only: the stage of
jobs.pipeline.MONITOR_STAGES (dags.wiring).

Each run monitors the hours up to the hour that ended before its time (its logical date, or ``run_after``
for a run that a publish triggered, less an hour: a scheduled run at 13:00 watches up to 12:00-12:59, a
run that a publish triggered at 13:20 too). A
crossed threshold fails the task (red in the UI); it is not retried, since the same data would cross it
again, and the next run checks anew.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable

from core.config import load_config
from dags.wiring import wire
from jobs.pipeline import BUNDLE, MONITOR_STAGES

# a run that a publish triggered has no logical date: its run_after; `airflow dags test` and backfills set one
HOUR = "{{ ((dag_run.logical_date or dag_run.run_after) - macros.timedelta(hours=1)).strftime('%Y-%m-%dT%H') }}"

orchestration = load_config().orchestration

with DAG(
    dag_id="pctr_monitor",
    description="served features vs training set (PSI, KS), served pCTR calibration, staleness -> report, MLflow",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 * * * *", timezone="UTC"), assets=[Asset(BUNDLE)]),
    start_date=dt.datetime.fromisoformat(orchestration.start_date).replace(tzinfo=dt.UTC),
    catchup=False,  # it watches the present: hours long past are not monitored after the fact
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["pctr"],
):
    wire(MONITOR_STAGES, HOUR, orchestration)
