"""pctr_daily: the daily retrain. Wiring only: every task is a stage of jobs.pipeline.DAILY_STAGES (dags.wiring)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from core.config import load_config
from dags.timetables import ClosedDayTimetable
from dags.wiring import wire
from jobs.pipeline import DAILY_STAGES

orchestration = load_config().orchestration

with DAG(
    dag_id="pctr_daily",
    description="logs -> Spark join -> GX -> features -> Feast -> DeepFM (Horovod) -> calibration -> MLflow -> bundle",
    schedule=ClosedDayTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime.fromisoformat(orchestration.start_date).replace(tzinfo=dt.UTC),
    catchup=orchestration.catchup,
    max_active_runs=orchestration.max_active_runs,
    default_args={
        "retries": orchestration.retries,
        "retry_delay": dt.timedelta(minutes=orchestration.retry_delay_minutes),
    },
    tags=["pctr"],
):
    wire(DAILY_STAGES, "{{ ds }}", orchestration)
