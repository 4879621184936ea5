"""Airflow for pctr: this repo's ``dags/``, metadata in ``orchestration.database_url`` (default: sqlite in the home).

Used by ``make demo`` (``airflow dags test``), ``make ui`` (``airflow standalone``) and the DAG tests.
Airflow is always started as ``python -m airflow`` with the environment built here, so the CLI, the UI
and the tests agree on one configuration.

The demo runs ``airflow dags test --use-executor``: every task in a process of its own, as a deployment
runs it, so a task's memory (a Spark JVM, TensorFlow) is returned when it ends instead of piling up in the
one ``dags test`` process. The executor's task processes report to an Execution API server, which the
demo starts (``api_server_command``). ``DagTestOutput`` reads that run's output line by line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.config import PctrConfig
from core.layout import Layout

REPO = Path(__file__).resolve().parent.parent
# pctr's Airflow plugins (its DAGs' custom timetable): every Airflow process must load them
PLUGINS_FOLDER = REPO / "dags" / "plugins"

# `dags test` lines this module reads (Airflow 3.3, LocalExecutor), by the process that prints them:
# - a task process: log lines that end in key-values, "... task_id=train ti_id=... try_number=1", and its
#   stdout as "<time> [info     ] <line>     [task.stdout]". (The dags test process writes a task id as
#   `task_id=train,` or `task_id='train'`, which the look-behind and the trailing blank leave out.)
# - the worker's supervisor, once the task process has exited (no task id: the tasks run one at a time):
#   "<time> [info     ] Workload finished [supervisor] duration=46.1 exit_code=0 final_state=success ...".
# The dags test process's own "TaskInstance Finished: ... state=success" comes when the executor's report
# is processed: seconds later, and not at all for the last task (the loop ends with the run's state).
TASK_PROCESS_LINE = re.compile(r"(?<![\w'])task_id=(?P<task_id>\w+)\s")
WORKLOAD_FINISHED = re.compile(r"Workload finished .*?duration=(?P<seconds>\S+) .*?final_state=(?P<state>\w+)")
TRAIN_LINE = re.compile(r"(?P<text>\[train\] .*?)\s+\[task\.std(?:out|err)\]\s*$")
# printed every second while a task runs: noise on a terminal
WAITING_LINE = "No tasks to run. unrunnable tasks"
# How long a connection to the sqlite metadata waits for another's write lock (Python's default: 5 s). The
# scheduler, the DAG processor, the API server, the task processes and a CLI command share one file: with
# the default, `airflow backfill create` beside a running scheduler failed with "database is locked".
SQLITE_CONNECT_ARGS = {"timeout": 60}
# ...and still did, rarely, beside a scheduler busy with a run: a CLI command meeting the lock is run again.
SQLITE_LOCK_ATTEMPTS = 3


def airflow_env(cfg: PctrConfig, parallelism: int = 4) -> dict[str, str]:
    """Environment for Airflow processes; ``parallelism`` stays small (the default starts 32 workers)."""
    home = Layout(cfg.home).airflow_home
    return {
        **os.environ,
        # `airflow standalone` starts its components as `airflow ...` commands: this venv's must come first
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PCTR_HOME": str(cfg.home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        **_database_env(cfg),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


def _database_env(cfg: PctrConfig) -> dict[str, str]:
    """Airflow's metadata database: ``orchestration.database_url``, or sqlite in this home."""
    if cfg.orchestration.database_url:
        return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cfg.orchestration.database_url}
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{Layout(cfg.home).airflow_home / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_CONNECT_ARGS",
    }


def dags_test_env(cfg: PctrConfig, api_port: int) -> dict[str, str]:
    """Environment of the demo's ``dags test`` and its Execution API server: one task at a time, no retries.

    One task at a time: ``DagTestOutput`` tells whose process ended by the order of the output (two tasks
    at once made it miss calibrate's end), and train and train_retrieval (both after training_set) would
    share a small machine's cores. Without retries a failed task fails the run at once instead of waiting
    ``orchestration.retry_delay_minutes`` in up_for_retry; the DAG file reads the setting, so the
    production DAG keeps its retries.
    """
    return {
        **airflow_env(cfg, parallelism=1),
        "PCTR_ORCHESTRATION__RETRIES": "0",
        "PYTHONUNBUFFERED": "1",  # lines reach the demo as they are printed, not when a pipe buffer fills
        # a task's supervisor notices its process's exit only when it next wakes to heartbeat (default every
        # 5 s): 1 s saves seconds per task
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        # the executor signs each task's token with it and the API server checks it: both must share it
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
    }


def api_server_command(port: int) -> list[str]:
    """The Execution API alone (no UI), one worker, on loopback."""
    return [
        sys.executable, "-m", "airflow", "api-server",
        "--apps", "execution", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def dags_test_command(dag_id: str, ds: str) -> list[str]:
    return [sys.executable, "-m", "airflow", "dags", "test", dag_id, ds, "--use-executor"]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ready(url: str, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    """Return once ``url`` answers 200; raise if ``proc`` (the server, ``what``) exits or time runs out."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} at {url} was not ready within {timeout:.0f} s")


def wait_api_ready(port: int, proc: subprocess.Popen) -> None:
    """Return once the Execution API answers its health check."""
    wait_http_ready(f"http://127.0.0.1:{port}/execution/health", proc, "the Airflow API server")


def airflow(cfg: PctrConfig, *args: str) -> str:
    """Run one Airflow CLI command and return its output; raise with the tail of its output if it fails."""
    Layout(cfg.home).airflow_home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "airflow", *args]
    for _ in range(SQLITE_LOCK_ATTEMPTS):
        proc = subprocess.run(command, env=airflow_env(cfg), capture_output=True, text=True, check=False)
        output = proc.stdout + proc.stderr
        # sqlite rolls back the locked transaction, so the command can run again as it was
        if proc.returncode == 0 or "database is locked" not in output:
            break
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise RuntimeError(f"`airflow {' '.join(args)}` exited {proc.returncode}:\n{tail}")
    return output


def migrate(cfg: PctrConfig) -> None:
    airflow(cfg, "db", "migrate")


def is_paused(cfg: PctrConfig, dag_id: str) -> bool:
    output = airflow(cfg, "dags", "details", dag_id, "-o", "json")
    details = json.loads([line for line in output.splitlines() if line.startswith("[")][-1])
    return details[0]["is_paused"] in (True, "True")


def backfill(cfg: PctrConfig, first: str, last: str, dag_id: str = "pctr_daily") -> dict[str, Any]:
    """Have the scheduler (``make ui``, or a deployment's) run ``dag_id`` again for the days first..last.

    ``airflow backfill create``, reprocessing finished runs, one run at a time. Airflow 3 schedules no
    task of a paused DAG, backfill or not: a paused DAG is refused here rather than left waiting.
    """
    if is_paused(cfg, dag_id):
        raise ValueError(
            f"{dag_id} is paused: Airflow runs no backfill of a paused DAG. Unpause it (the UI's toggle or "
            f"`airflow dags unpause {dag_id}`; its schedule starts too) and run the backfill again."
        )
    created = {
        "dag_id": dag_id, "from_date": first, "to_date": last, "reprocess_behavior": "completed", "max_active_runs": 1,
    }  # fmt: skip
    # the same settings as `airflow backfill create` options: --dag-id=pctr_daily ...
    try:
        airflow(cfg, "backfill", "create", *(f"--{key.replace('_', '-')}={value}" for key, value in created.items()))
    except RuntimeError as error:
        # ``airflow`` runs a command that met sqlite's lock again; when the lock came after the backfill was
        # written, the second attempt finds it running (measured: once in four test runs): it is this one
        if "AlreadyRunningBackfill" not in str(error) or not _backfill_running(cfg, first, last, dag_id):
            raise
    return created


# Airflow 3.3's CLI lists no backfills: its own model answers, in a process with Airflow's environment.
_RUNNING_BACKFILL = """
import sys
from airflow.models.backfill import Backfill
from airflow.utils.session import create_session
with create_session() as session:
    rows = session.query(Backfill).filter(Backfill.dag_id == sys.argv[1], Backfill.completed_at.is_(None)).all()
    print(any(str(r.from_date)[:10] == sys.argv[2] and str(r.to_date)[:10] == sys.argv[3] for r in rows))
"""


def _backfill_running(cfg: PctrConfig, first: str, last: str, dag_id: str) -> bool:
    """Whether a running backfill of ``dag_id`` covers exactly ``first``..``last``."""
    command = [sys.executable, "-c", _RUNNING_BACKFILL, dag_id, first, last]
    proc = subprocess.run(command, env=airflow_env(cfg), capture_output=True, text=True, check=False)
    return proc.returncode == 0 and proc.stdout.strip().splitlines()[-1:] == ["True"]


@dataclass(frozen=True)
class TaskEvent:
    """What one line of ``dags test`` output says about a task.

    ``started``: its process logged its first line; ``ended``: its process exited, with the task's
    ``state`` and the process's ``seconds`` (Airflow's run time of the task plus about a second to start
    and stop the process); ``train``: a training progress line, in ``text``.
    """

    kind: Literal["started", "ended", "train"]
    task_id: str | None
    state: str | None = None
    seconds: float | None = None
    text: str = ""

    @property
    def failed(self) -> bool:
        """The task's process ended without success, and the task will not run again by itself.

        A sensor in reschedule mode ends a process at every check that finds it waiting, in
        ``up_for_reschedule``: it runs again after its poke interval, which is not a failure.
        """
        return self.kind == "ended" and self.state not in ("success", "up_for_reschedule")


class DagTestOutput:
    """Reads ``airflow dags test --use-executor`` output, tasks one at a time, into ``TaskEvent`` s.

    ``ended`` maps each task whose process exited to its ``state`` and ``seconds`` (its last try).
    """

    def __init__(self) -> None:
        self.running: str | None = None
        self.ended: dict[str, dict[str, Any]] = {}

    def feed(self, line: str) -> list[TaskEvent]:
        """The events of one output line, in order."""
        events = []
        if (match := TASK_PROCESS_LINE.search(line)) and match["task_id"] != self.running:
            self.running = match["task_id"]
            events.append(TaskEvent("started", self.running))
        if match := TRAIN_LINE.search(line):
            events.append(TaskEvent("train", self.running, text=match["text"]))
        if (match := WORKLOAD_FINISHED.search(line)) and self.running is not None:
            state, seconds = match["state"], round(float(match["seconds"]), 2)
            self.ended[self.running] = {"state": state, "seconds": seconds}
            events.append(TaskEvent("ended", self.running, state=state, seconds=seconds))
            self.running = None
        return events


def task_log_tail(cfg: PctrConfig, dag_id: str, task_id: str, lines: int = 30) -> list[str]:
    """The last ``lines`` lines of the newest log of a task, exceptions rendered as tracebacks.

    Airflow writes a task's log as JSON lines under ``logs/dag_id=D/run_id=R/task_id=T/attempt=N.log``;
    an exception is a record with ``error_detail`` (type, value, frames per chained exception).
    """
    folder = Layout(cfg.home).airflow_home / "logs" / f"dag_id={dag_id}"
    logs = sorted(folder.glob(f"run_id=*/task_id={task_id}/attempt=*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return []
    rendered: list[str] = []
    for raw in logs[-1].read_text(errors="replace").splitlines():
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            rendered.append(raw)
            continue
        rendered += _render_record(record)
    return rendered[-lines:]


def _render_record(record: dict[str, Any]) -> list[str]:
    event = str(record.get("event", ""))
    if event.startswith("::"):  # ::group:: markers for the UI
        return []
    out = [f"{str(record.get('timestamp', ''))[11:19]} {record.get('level', '')}: {event}"]
    for exc in record.get("error_detail") or []:
        out.append("Traceback (most recent call last):")
        out += [f'  File "{f["filename"]}", line {f["lineno"]}, in {f["name"]}' for f in exc.get("frames", [])]
        out += f"{exc.get('exc_type')}: {exc.get('exc_value')}".splitlines()
    return out
