"""pctr_daily: the daily retrain. Wiring only: every task is a stage of jobs.pipeline.DAILY_STAGES.

A stage that waits (``Stage.sensor``, the first one: the raw logs of ds) is a sensor in reschedule mode: it
gives its worker slot back between checks and fails after ``orchestration.sensor_timeout_hours``.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG, BaseOperator

from core.config import load_config
from jobs.pipeline import DAILY_STAGES, Stage, poke_stage_task, run_stage_task

orchestration = load_config().orchestration


def _task(stage: Stage) -> BaseOperator:
    op_kwargs = {"name": stage.name, "ds": "{{ ds }}"}
    if stage.sensor:
        return PythonSensor(
            task_id=stage.name,
            python_callable=poke_stage_task,
            op_kwargs=op_kwargs,
            doc_md=stage.help,
            mode="reschedule",
            poke_interval=orchestration.sensor_poke_interval_seconds,
            timeout=dt.timedelta(hours=orchestration.sensor_timeout_hours),
        )
    return PythonOperator(task_id=stage.name, python_callable=run_stage_task, op_kwargs=op_kwargs, doc_md=stage.help)


with DAG(
    dag_id="pctr_daily",
    description="logs -> Spark join -> GX -> features -> Feast -> DeepFM (Horovod) -> calibration -> MLflow -> bundle",
    schedule="@daily",
    start_date=dt.datetime.fromisoformat(orchestration.start_date).replace(tzinfo=dt.UTC),
    catchup=orchestration.catchup,
    max_active_runs=orchestration.max_active_runs,
    default_args={
        "retries": orchestration.retries,
        "retry_delay": dt.timedelta(minutes=orchestration.retry_delay_minutes),
    },
    tags=["pctr"],
) as dag:
    tasks = {stage.name: _task(stage) for stage in DAILY_STAGES}
    for stage in DAILY_STAGES:
        for upstream in stage.after:
            tasks[upstream] >> tasks[stage.name]
