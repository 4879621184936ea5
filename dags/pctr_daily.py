"""pctr_daily: the daily retrain. Wiring only: every task is a stage of jobs.pipeline.DAILY_STAGES."""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from core.config import load_config
from jobs.pipeline import DAILY_STAGES, run_stage_task

orchestration = load_config().orchestration

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
    tasks = {
        stage.name: PythonOperator(
            task_id=stage.name,
            python_callable=run_stage_task,
            op_kwargs={"name": stage.name, "ds": "{{ ds }}"},
            doc_md=stage.help,
        )
        for stage in DAILY_STAGES
    }
    for stage in DAILY_STAGES:
        for upstream in stage.after:
            tasks[upstream] >> tasks[stage.name]
