"""Reading `airflow dags test --use-executor` output and task logs (lines as Airflow 3.3 prints them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.config import load_config
from entrypoints.airflow_local import DagTestOutput, TaskEvent, dags_test_env, task_log_tail

RUN = "run_id=manual__2026-12-01T23:03:26.037026+00:00"
TI = "ti_id=01a233d9-438a-700e-85b7-71c35e7c5670 try_number=1"
# a success, then a failure; abridged from a real run of a two-task DAG
OUTPUT = [
    "2026-12-01T23:03:26.300000Z [info     ] Worker starting up pid=4775 [airflow.executors] loc=x.py:76",
    "2026-12-01 23:03:27.072133+00:00 [info     ] ::group::Pre Execute           [task] loc=task_runner.py:2412",
    f"2026-12-01 23:03:27.303146+00:00 [info     ] DAG bundles loaded: dags-folder [airflow.dag_processing.bundles."
    f"manager.DagBundlesManager] dag_id=pctr_daily loc=manager.py:304 map_index=-1 {RUN} task_id=train {TI}",
    "2026-12-01T23:03:27.398458Z [info     ] [train] epoch 1/2 loss 0.21 val_logloss 0.07 41,000 examples/s     "
    "[task.stdout]",
    f"2026-12-01 23:03:29.399010+00:00 [info     ] Pushing xcom                   [task] dag_id=pctr_daily "
    f"loc=task_runner.py:2280 map_index=-1 {RUN} task_id=train ti=\"RuntimeTaskInstance(task_id='train', "
    f"dag_id='pctr_daily')\" {TI}",
    "2026-12-01T23:03:29.488250Z [info     ] Workload finished              [supervisor] duration=2.7540324090000468 "
    "exit_code=0 final_state=success loc=supervisor.py:2658 workload_id=01a233d9 workload_type=ExecuteTask",
    "2026-12-01T23:03:29.500000Z [warning  ] No tasks to run. unrunnable tasks: {<TaskInstance: pctr_daily.calibrate "
    "manual__2026-12-01T23:03:26.037026+00:00 [None]>}",
    "2026-12-01T23:03:29.677169Z [info     ] Received executor event with state success for task instance "
    "TaskInstanceKey(dag_id='pctr_daily', task_id='train', run_id='manual__x', try_number=1, map_index=-1)",
    "2026-12-01T23:03:29.716462Z [info     ] TaskInstance Finished: dag_id=pctr_daily, task_id=train, "
    "run_id=manual__2026-12-01T23:03:26.037026+00:00, map_index=-1, ti_id=01a233d9, run_start_date=2026-12-01 "
    "23:03:26.771928+00:00, run_end_date=2026-12-01 23:03:29.419882+00:00, run_duration=2.648, state=success, "
    "executor=LocalExecutor(parallelism=1), executor_state=success, try_number=1, max_tries=0",
    f"2026-12-01 23:03:29.894215+00:00 [info     ] DAG bundles loaded: dags-folder [airflow.dag_processing.bundles."
    f"manager.DagBundlesManager] dag_id=pctr_daily loc=manager.py:304 map_index=-1 {RUN} task_id=calibrate {TI}",
    "2026-12-01T23:03:46.046706Z [info     ] about to fail                  [task.stdout]",
    "2026-12-01 23:03:46.046953+00:00 [error    ] Task failed with exception     [task] dag_id=pctr_daily "
    "error_detail=[{'exc_type': 'RuntimeError', 'exc_value': 'boom [train] ', 'frames': []}] "
    f"loc=task_runner.py:1676 map_index=-1 {RUN} task_id=calibrate {TI}",
    "2026-12-01T23:03:51.081698Z [info     ] Workload finished              [supervisor] duration=5.1230510759999675 "
    "exit_code=0 final_state=failed loc=supervisor.py:2658 workload_id=01a233d0 workload_type=ExecuteTask",
    "2026-12-01T23:03:51.823651Z [info     ] Marking task as FAILED. dag_id=pctr_daily, task_id=calibrate, "
    "run_id=manual__x, logical_date=20261103T000000, start_date=, end_date=20261201T225315",
]


def test_task_starts_ends_and_training_lines_are_read_from_dags_test_output() -> None:
    output = DagTestOutput()
    events = [event for line in OUTPUT for event in output.feed(line)]
    assert events == [
        TaskEvent("started", "train"),
        TaskEvent("train", "train", text="[train] epoch 1/2 loss 0.21 val_logloss 0.07 41,000 examples/s"),
        TaskEvent("ended", "train", state="success", seconds=2.75),
        TaskEvent("started", "calibrate"),
        TaskEvent("ended", "calibrate", state="failed", seconds=5.12),
    ]
    assert output.ended == {
        "train": {"state": "success", "seconds": 2.75},
        "calibrate": {"state": "failed", "seconds": 5.12},
    }
    assert output.running is None


def test_a_retried_task_starts_again() -> None:
    output = DagTestOutput()
    first_try = OUTPUT[2:6]
    events = [event.kind for line in [*first_try, *first_try] for event in output.feed(line)]
    assert events == ["started", "train", "ended", "started", "train", "ended"]


def test_a_sensor_rescheduled_between_its_checks_has_not_failed() -> None:
    """A reschedule-mode sensor whose first check found it waiting (the end line is from a real run)."""
    output = DagTestOutput()
    check = OUTPUT[2].replace("task_id=train", "task_id=wait_for_logs")
    waiting = (
        "2026-12-02T10:04:54.492450Z [info     ] Workload finished              [supervisor] "
        "duration=0.5386792720000813 exit_code=0 final_state=up_for_reschedule loc=supervisor.py:2658 "
        "workload_id=01a23636-d6f3-7cbe-ac8d-066f5f1c7ddc workload_type=ExecuteTask"
    )
    events = [event for line in [check, waiting, check, OUTPUT[5]] for event in output.feed(line)]
    assert [(e.kind, e.state, e.failed) for e in events] == [
        ("started", None, False),
        ("ended", "up_for_reschedule", False),
        ("started", None, False),
        ("ended", "success", False),
    ]
    assert output.ended == {"wait_for_logs": {"state": "success", "seconds": 2.75}}
    assert TaskEvent("ended", "calibrate", state="failed", seconds=5.12).failed


def _record(event: str, **extra: object) -> str:
    return json.dumps({"timestamp": "2026-12-01T22:53:46.046590Z", "level": "info", "event": event, **extra})


def test_the_log_tail_of_a_task_renders_its_exception_and_reads_its_newest_attempt(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    task_dir = tmp_path / "airflow" / "logs" / "dag_id=pctr_daily" / "run_id=manual__1" / "task_id=train"
    task_dir.mkdir(parents=True)
    (task_dir / "attempt=1.log").write_text(_record("an older try") + "\n")
    error = {
        "exc_type": "RuntimeError",
        "exc_value": "horovodrun exited 1; last lines:\nNo such file",
        "frames": [{"filename": "jobs/train.py", "lineno": 91, "name": "run"}],
    }
    lines = [_record("::group::Pre Execute"), _record("about to fail", logger="task.stdout")]
    lines.append(_record("Task failed with exception", level="error", error_detail=[error]))
    newest = task_dir / "attempt=2.log"
    newest.write_text("\n".join(lines) + "\n")
    os.utime(newest, (newest.stat().st_mtime + 10,) * 2)

    assert task_log_tail(cfg, "pctr_daily", "train") == [
        "22:53:46 info: about to fail",
        "22:53:46 error: Task failed with exception",
        "Traceback (most recent call last):",
        '  File "jobs/train.py", line 91, in run',
        "RuntimeError: horovodrun exited 1; last lines:",
        "No such file",
    ]
    assert task_log_tail(cfg, "pctr_daily", "train", lines=2) == [
        "RuntimeError: horovodrun exited 1; last lines:",
        "No such file",
    ]
    assert task_log_tail(cfg, "pctr_daily", "publish") == []


def test_the_demo_airflow_runs_one_task_at_a_time_without_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(home=tmp_path)
    env = dags_test_env(cfg, api_port=18999)
    assert env["AIRFLOW__CORE__PARALLELISM"] == env["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"] == "1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18999/execution/"
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32
    monkeypatch.setenv("PCTR_ORCHESTRATION__RETRIES", env["PCTR_ORCHESTRATION__RETRIES"])
    assert load_config().orchestration.retries == 0
    monkeypatch.delenv("PCTR_ORCHESTRATION__RETRIES")
    assert load_config().orchestration.retries > 0  # what the production DAG keeps
