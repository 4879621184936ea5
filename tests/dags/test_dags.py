"""DAG integrity: the DAG folder imports cleanly, is wired from the stage list, and stays cheap to parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.pipeline import BUNDLE, DAILY_STAGES, HOURLY_STAGES, JOINED_DAY, MONITOR_STAGES, Stage

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


DAG_FILES = sorted(path for path in (REPO / "dags").glob("pctr_*.py"))


def test_dag_folder_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {path.stem for path in DAG_FILES} == {"pctr_daily", "pctr_hourly", "pctr_monitor"}


def test_pctr_hourly_is_wired_from_its_stage_list_and_closes_the_hour_whose_window_ended(dagbag) -> None:
    import pendulum
    from airflow.sdk.execution_time import macros

    dag = _wired_from(dagbag.dags["pctr_hourly"], HOURLY_STAGES)
    assert dag.catchup is False
    join = dag.get_task("join_logs")
    # the run at 13:00 closes 06:00-06:59, whose clicks have had their 6 hours
    context = {"data_interval_end": pendulum.datetime(2026, 11, 7, 13, tz="UTC"), "macros": macros}
    assert join.render_template(join.op_kwargs["ds"], context) == "2026-11-07T06"


def test_the_daily_join_and_both_publishes_update_assets(dagbag) -> None:
    outlets = {
        (dag_id, task.task_id): [asset.name for asset in task.outlets]
        for dag_id in ("pctr_daily", "pctr_hourly")
        for task in dagbag.dags[dag_id].tasks
        if task.outlets
    }
    assert outlets == {
        ("pctr_daily", "join_logs"): [JOINED_DAY],
        ("pctr_daily", "publish"): [BUNDLE],
        ("pctr_hourly", "publish"): [BUNDLE],
    }


def _wired_from(dag, stages: tuple[Stage, ...]):
    """``dag``, after checking that its tasks are ``stages`` wired by their ``after``, from the sensor to publish."""
    assert {t.task_id for t in dag.tasks} == {s.name for s in stages}
    for stage in stages:
        assert dag.get_task(stage.name).upstream_task_ids == set(stage.after)
    assert [t.task_id for t in dag.roots] == ["wait_for_logs"] and [t.task_id for t in dag.leaves] == ["publish"]
    return dag


def test_pctr_daily_is_wired_from_the_stage_list(dagbag) -> None:
    assert _wired_from(dagbag.dags["pctr_daily"], DAILY_STAGES).catchup is True


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
    six, now = pendulum.datetime(2026, 11, 7, 6, tz="UTC"), pendulum.datetime(2026, 12, 7, 15, tz="UTC")
    # scheduled (or `dags test`, or a backfill): its logical date; triggered by a publish at 06:20: no logical date
    for logical_date, run_after in ((six, six), (six, now), (None, six.add(minutes=20))):
        context = {"dag_run": SimpleNamespace(logical_date=logical_date, run_after=run_after), "macros": macros}
        assert task.render_template(task.op_kwargs, context) == {"name": "monitor", "ds": "2026-11-07T05"}
    # every hour, and when either DAG publishes a bundle
    assert {asset.name for asset in dag.timetable.asset_condition.objects} == {BUNDLE}
    assert dag.timetable.timetable.expression == "0 * * * *"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda path: path.stem)
def test_dag_files_import_no_heavy_modules(dag_file: Path) -> None:
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location({dag_file.stem!r}, {str(dag_file)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_scheduled_pctr_daily_run_closes_the_day_that_has_ended(dagbag) -> None:
    """The run made at midnight is the one of the day before: ``{{ ds }}`` is the day whose logs are complete."""
    import pendulum
    from airflow.timetables.base import TimeRestriction

    first = dagbag.dags["pctr_daily"].timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=pendulum.datetime(2026, 11, 1, tz="UTC"), latest=None, catchup=True),
    )
    assert first.logical_date == pendulum.datetime(2026, 11, 1, tz="UTC")
    assert first.run_after == pendulum.datetime(2026, 11, 2, tz="UTC")


def test_a_pctr_daily_run_triggered_by_hand_closes_its_day_and_the_schedule_goes_on_after_it(dagbag) -> None:
    """``airflow dags test D`` (the demo) or the UI's Trigger at D: the interval of D, and the scheduler, meeting
    that run at its next logical date, computes from its interval the day after, not D again."""
    import pendulum
    from airflow.timetables.base import TimeRestriction

    timetable = dagbag.dags["pctr_daily"].timetable
    day = pendulum.datetime(2026, 11, 7, tz="UTC")
    for run_after in (day, day.add(hours=15)):  # a logical date, or a trigger's time that day
        manual = timetable.infer_manual_data_interval(run_after=run_after)
        assert (manual.start, manual.end) == (day, day.add(days=1))
    restriction = TimeRestriction(earliest=day.subtract(days=3), latest=None, catchup=True)
    after = timetable.next_dagrun_info(last_automated_data_interval=manual, restriction=restriction)
    assert after.logical_date == day.add(days=1)


def test_airflow_loads_pctr_daily_with_its_timetable_from_the_plugins_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler and the UI deserialize a custom timetable only if a plugin registers it: every Airflow
    process gets the plugins folder from ``airflow_env``."""
    from core.config import load_config
    from entrypoints.airflow_local import airflow_env

    probe = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        "from airflow.serialization.serialized_objects import DagSerialization\n"
        f"dag = DagBag(dag_folder={str(REPO / 'dags')!r}).dags['pctr_daily']\n"
        "print(type(DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable).__name__)\n"
    )
    monkeypatch.setenv("PCTR_HOME", str(tmp_path))
    env = airflow_env(load_config())
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "ClosedDayTimetable"
    env.pop("AIRFLOW__CORE__PLUGINS_FOLDER")
    unregistered = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env)
    assert "Timetable class 'dags.timetables.ClosedDayTimetable' is not registered" in unregistered.stderr
