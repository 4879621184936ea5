"""Runs of ``pctr_daily`` by ``make ui``'s real scheduler, read from Airflow's metadata database (sqlite or PostgreSQL).

Shared by the tests that drive the scheduler (backfills on sqlite, parallel tasks on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.config import PctrConfig
from entrypoints.airflow_local import REPO, airflow_env, free_port, task_log_tail, wait_http_ready

RUN_TIMEOUT_SECONDS = 40 * 60


def query(cfg: PctrConfig, sql: str, **params: Any) -> list[tuple]:
    """Rows from Airflow's metadata database, shared with the running scheduler (``:name`` parameters)."""
    import sqlalchemy

    url = airflow_env(cfg)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    # the scheduler holds sqlite's write lock for moments at a time: wait for it as Airflow's processes do
    connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
    engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as db:
            return [tuple(row) for row in db.execute(sqlalchemy.text(sql), params)]
    finally:
        engine.dispose()


def day(logical_date: str | dt.datetime) -> str:
    """The UTC day of a logical date as the database returns it (text from sqlite, a datetime from PostgreSQL)."""
    if isinstance(logical_date, str):
        return logical_date[:10]
    return logical_date.astimezone(dt.UTC).date().isoformat()


def dag_runs(cfg: PctrConfig) -> list[tuple[str, str, str]]:
    """``(ds, run_type, state)`` of every pctr_daily run."""
    rows = query(cfg, "select logical_date, run_type, state from dag_run where dag_id = 'pctr_daily'")
    return [(day(logical_date), run_type, state) for logical_date, run_type, state in rows]


def task_instances(cfg: PctrConfig, ds: str) -> dict[str, tuple[str, dt.datetime | str, dt.datetime | str]]:
    """``task_id: (state, start_date, end_date)`` of the pctr_daily tasks of ds."""
    rows = query(
        cfg,
        "select r.logical_date, ti.task_id, ti.state, ti.start_date, ti.end_date from task_instance ti"
        " join dag_run r on ti.dag_id = r.dag_id and ti.run_id = r.run_id where ti.dag_id = 'pctr_daily'",
    )
    return {task: (state, start, end) for logical_date, task, state, start, end in rows if day(logical_date) == ds}


def task_state(cfg: PctrConfig, ds: str, task_id: str) -> str | None:
    found = task_instances(cfg, ds).get(task_id)
    return found[0] if found else None


def failed_tasks(cfg: PctrConfig) -> list[str]:
    rows = query(cfg, "select task_id from task_instance where dag_id = 'pctr_daily' and state = 'failed'")
    return [task_id for (task_id,) in rows]


def wait_for_runs(cfg: PctrConfig, days: list[str], run_type: str, ui: subprocess.Popen) -> None:
    """Return once the ``run_type`` runs of ``days`` have succeeded; fail with the failed task's log."""

    def succeeded() -> bool:
        states = {ds: state for ds, kind, state in dag_runs(cfg) if kind == run_type and ds in days}
        if "failed" in states.values():
            failed = failed_tasks(cfg)
            tail = "\n".join(task_log_tail(cfg, "pctr_daily", failed[0])) if failed else ""
            pytest.fail(f"{run_type} runs: {states}; failed tasks {failed}\n{tail}")
        assert ui.poll() is None, f"`make ui` exited {ui.returncode}"
        return len(states) == len(days) and set(states.values()) == {"success"}

    wait(succeeded, RUN_TIMEOUT_SECONDS, f"the {run_type} runs of {days}")


def wait(done: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not done():
        if time.time() > deadline:
            pytest.fail(f"{what}: not done after {seconds:.0f} s")
        time.sleep(5)


@contextlib.contextmanager
def airflow_ui(cfg: PctrConfig, parallelism: int | None = None) -> Iterator[subprocess.Popen]:
    """``make ui`` on free ports (its scheduler, DAG processor and API server), stopped as Ctrl-C stops it.

    ``parallelism``: how many tasks its LocalExecutor runs at once (default: ``make ui``'s).
    """
    port = free_port()
    command = [sys.executable, "-m", "entrypoints.ui", "--airflow-port", str(port), "--mlflow-port", str(free_port())]
    if parallelism is not None:
        command += ["--parallelism", str(parallelism)]
    proc = subprocess.Popen(
        command, cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http_ready(f"http://127.0.0.1:{port}/api/v2/monitor/health", proc, "the Airflow UI", timeout=300)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
