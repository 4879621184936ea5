"""How the pctr DAGs turn a stage list (``jobs.pipeline``) into Airflow tasks: shared wiring, no DAG of its own.

A stage that waits (``Stage.sensor``, the first one: its raw logs) is a sensor in reschedule mode: it
gives its worker slot back between checks and fails after ``orchestration.sensor_timeout_hours``. A
stage that produces an asset (``Stage.asset``) lists it as its outlet, for the DAGs scheduled on it.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import Asset, BaseOperator

from core.config import OrchestrationConfig
from jobs.pipeline import Stage, poke_stage_task, run_stage_task


def stage_task(stage: Stage, period: str, orchestration: OrchestrationConfig) -> BaseOperator:
    """The task of ``stage`` for the day or hour that the template ``period`` renders."""
    op_kwargs = {"name": stage.name, "ds": period}
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
    outlets = [Asset(stage.asset)] if stage.asset else []
    return PythonOperator(
        task_id=stage.name, python_callable=run_stage_task, op_kwargs=op_kwargs, doc_md=stage.help, outlets=outlets
    )


def wire(stages: tuple[Stage, ...], period: str, orchestration: OrchestrationConfig) -> None:
    """The stages' tasks in the DAG being defined, each downstream of the stages it comes ``after``."""
    tasks = {stage.name: stage_task(stage, period, orchestration) for stage in stages}
    for stage in stages:
        for upstream in stage.after:
            tasks[upstream] >> tasks[stage.name]
