"""pctr_monitor: hourly checks of what is served. Wiring only: the stage of jobs.pipeline.MONITOR_STAGES.

Each run monitors the hour that has just ended: ``data_interval_end`` less an hour, which is that hour
whether the cron schedule makes runs with intervals or at single points in time. A crossed threshold
fails the task (red in the UI); it is not retried, since the same data would cross it again, and the
next hour's run checks anew.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from core.config import load_config
from jobs.pipeline import MONITOR_STAGES, run_stage_task

HOUR = "{{ (data_interval_end - macros.timedelta(hours=1)).strftime('%Y-%m-%dT%H') }}"

orchestration = load_config().orchestration

with DAG(
    dag_id="pctr_monitor",
    description="served features vs training set (PSI, KS), served pCTR calibration, staleness -> report, MLflow",
    schedule="@hourly",
    start_date=dt.datetime.fromisoformat(orchestration.start_date).replace(tzinfo=dt.UTC),
    catchup=False,  # it watches the present: hours long past are not monitored after the fact
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["pctr"],
) as dag:
    for stage in MONITOR_STAGES:
        PythonOperator(
            task_id=stage.name,
            python_callable=run_stage_task,
            op_kwargs={"name": stage.name, "ds": HOUR},
            doc_md=stage.help,
        )
