"""DAG integrity: the DAG folder imports cleanly, is wired from the stage list, and stays cheap to parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.pipeline import DAILY_STAGES, MONITOR_STAGES

REPO = Path(__file__).resolve().parents[2]
HEAVY_MODULES = (
    "tensorflow",
    "keras",
    "pyspark",
    "feast",
    "mlflow",
    "great_expectations",
    "faiss",
    "horovod",
    "sklearn",
)


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    from airflow.dag_processing.dagbag import DagBag

    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return DagBag(dag_folder=str(REPO / "dags"))


def test_dag_folder_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert {"pctr_daily", "pctr_monitor"} <= set(dagbag.dag_ids)


def test_pctr_daily_is_wired_from_the_stage_list(dagbag) -> None:
    dag = dagbag.dags["pctr_daily"]
    assert {t.task_id for t in dag.tasks} == {s.name for s in DAILY_STAGES}
    for stage in DAILY_STAGES:
        assert dag.get_task(stage.name).upstream_task_ids == set(stage.after)
    assert dag.catchup is True
    roots = [t.task_id for t in dag.roots]
    assert roots == ["wait_for_logs"]
    assert [t.task_id for t in dag.leaves] == ["publish"]


def test_the_first_task_waits_for_the_raw_logs_in_reschedule_mode(dagbag) -> None:
    from airflow.providers.standard.sensors.python import PythonSensor

    from core.config import load_config
    from jobs.pipeline import poke_stage_task

    dag = dagbag.dags["pctr_daily"]
    sensor = dag.get_task("wait_for_logs")
    assert [t.task_id for t in dag.roots] == ["wait_for_logs"]
    assert dag.get_task("validate_raw").upstream_task_ids == {"wait_for_logs"}
    assert isinstance(sensor, PythonSensor) and sensor.python_callable is poke_stage_task
    assert sensor.mode == "reschedule"
    orchestration = load_config().orchestration
    assert sensor.poke_interval == orchestration.sensor_poke_interval_seconds == 300
    assert sensor.timeout == orchestration.sensor_timeout_hours * 3600 == 12 * 3600
    assert sensor.op_kwargs == {"name": "wait_for_logs", "ds": "{{ ds }}"}


def test_the_sensor_timeout_comes_from_the_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("PCTR_ORCHESTRATION__SENSOR_TIMEOUT_HOURS", "3")
    monkeypatch.setenv("PCTR_ORCHESTRATION__SENSOR_POKE_INTERVAL_SECONDS", "60")
    sensor = DagBag(dag_folder=str(REPO / "dags")).dags["pctr_daily"].get_task("wait_for_logs")
    assert (sensor.timeout, sensor.poke_interval) == (3 * 3600, 60)


def test_the_sensor_callable_imports_no_heavy_modules(tmp_path: Path) -> None:
    """It runs at every poke, in a fresh task process: an empty home is simply not ready."""
    probe = (
        "import json, sys\n"
        "from jobs.pipeline import poke_stage_task\n"
        "ready = poke_stage_task('wait_for_logs', '2026-11-02')\n"
        f"print(json.dumps([ready, [m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]]))\n"
    )
    env = {**os.environ, "PCTR_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO, env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, []]


def test_pctr_monitor_runs_the_monitor_stage_on_the_hour_that_has_just_ended(dagbag) -> None:
    import pendulum
    from airflow.sdk.execution_time import macros

    from jobs.pipeline import run_stage_task

    dag = dagbag.dags["pctr_monitor"]
    assert [t.task_id for t in dag.tasks] == [s.name for s in MONITOR_STAGES] == ["monitor"]
    task = dag.get_task("monitor")
    assert task.python_callable is run_stage_task and task.retries == 0
    assert dag.catchup is False
    context = {"data_interval_end": pendulum.datetime(2026, 11, 7, 6, tz="UTC"), "macros": macros}
    assert task.render_template(task.op_kwargs, context) == {"name": "monitor", "ds": "2026-11-07T05"}


@pytest.mark.parametrize("dag_file", ["pctr_daily.py", "pctr_monitor.py"])
def test_dag_files_import_no_heavy_modules(dag_file: str) -> None:
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dag', {str(REPO / 'dags' / dag_file)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
