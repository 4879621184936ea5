"""Airflow on the embedded defaults: sqlite metadata under ``$PCTR_HOME/airflow``, this repo's ``dags/``.

Used by ``make demo`` (``airflow dags test``), ``make ui`` (``airflow standalone``) and the DAG tests.
Airflow is always started as ``python -m airflow`` with the environment built here, so the CLI, the UI
and the tests agree on one configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobs.config import PctrConfig
from jobs.layout import Layout

REPO = Path(__file__).resolve().parent.parent


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
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    }


def airflow(cfg: PctrConfig, *args: str, capture: bool = False, log_file: Path | None = None) -> str:
    """Run one Airflow CLI command; raise with the tail of its output if it fails."""
    home = Layout(cfg.home).airflow_home
    home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "airflow", *args]
    if log_file is not None:
        with open(log_file, "w") as out:
            proc = subprocess.run(command, env=airflow_env(cfg), stdout=out, stderr=subprocess.STDOUT, check=False)
        output = log_file.read_text()
    else:
        proc = subprocess.run(command, env=airflow_env(cfg), capture_output=True, text=True, check=False)
        output = proc.stdout + (proc.stderr if not capture else "")
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise RuntimeError(f"`airflow {' '.join(args)}` exited {proc.returncode}:\n{tail}")
    return proc.stdout if capture and log_file is None else output


def _json_output(text: str) -> Any:
    """The JSON document at the end of a CLI's stdout (Airflow may print log lines before it)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("[{", "[]", "{")):
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON in the Airflow CLI output: {text[-500:]!r}")


def migrate(cfg: PctrConfig) -> None:
    airflow(cfg, "db", "migrate")


def dags_test(cfg: PctrConfig, dag_id: str, ds: str, log_file: Path) -> dict[str, dict[str, Any]]:
    """``airflow dags test DAG DS`` (no scheduler), then the state and duration of every task of that run."""
    airflow(cfg, "dags", "test", dag_id, ds, log_file=log_file)
    runs = _json_output(airflow(cfg, "dags", "list-runs", dag_id, "--output", "json", capture=True))
    run = next(r for r in runs if str(r.get("logical_date", "")).startswith(ds))
    states = _json_output(
        airflow(cfg, "tasks", "states-for-dag-run", dag_id, run["run_id"], "--output", "json", capture=True)
    )
    return {s["task_id"]: s for s in states}
