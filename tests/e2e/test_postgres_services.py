"""The cluster profile's services on PostgreSQL (``.ci/postgres.sh``'s cluster), over copies of the demo's home.

- MLflow: a tracking server on a database of its own holds the register stage's run, model version and alias,
  and, through its artifact proxy, the artifacts that a warm start downloads again.
- Airflow: with its metadata on a database of its own, ``make ui``'s scheduler runs a day of ``pctr_daily``
  with LocalExecutor, two tasks at once (on sqlite it runs one at a time).

Each test makes its own databases (unique names, dropped afterwards): reruns and other tests never meet.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.config import load_config
from core.io import read_json, sha256_file
from core.layout import RANKER_WEIGHTS, Layout, ranker_dir
from core.resources import MIB, PeakMemory
from core.tracking import download_ranker_weights
from entrypoints import cli
from entrypoints.airflow_local import REPO, airflow
from entrypoints.tracking_server import tracking_server
from jobs import register
from jobs.evaluate import load_evaluation
from jobs.pipeline import DAILY_STAGES
from tests.e2e.airflow_runs import airflow_ui, query, task_instances, wait, wait_for_runs

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

# train and train_retrieval both wait for training_set only: the most the daily DAG runs at once, and the least
# that shows tasks running side by side
PARALLELISM = 2


@pytest.fixture(scope="session")
def postgres() -> str:
    """``user:password@host:port`` of the pctr role on ``.ci/postgres.sh``'s cluster (installed, started if needed)."""
    subprocess.run([str(REPO / ".ci" / "postgres.sh")], check=True)
    return f"pctr:pctr@127.0.0.1:{os.environ.get('PCTR_PG_PORT', '5433')}"


@pytest.fixture
def fresh_database(postgres: str) -> Iterator[Callable[[str], str]]:
    """Creates empty databases owned by pctr, named after ``purpose`` and unique; yields their SQLAlchemy URLs."""
    import sqlalchemy

    server = sqlalchemy.create_engine(f"postgresql+psycopg2://{postgres}/postgres", isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def create(purpose: str) -> str:
        name = f"pctr_test_{purpose}_{uuid.uuid4().hex[:8]}"
        with server.connect() as db:
            db.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return f"postgresql+psycopg2://{postgres}/{name}"

    try:
        yield create
    finally:
        with server.connect() as db:
            for name in created:  # FORCE: a server stopped a moment ago may not have closed its connections yet
                db.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def _rows(url: str, sql: str) -> list[tuple]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as db:
            return [tuple(row) for row in db.execute(sqlalchemy.text(sql))]
    finally:
        engine.dispose()


def test_the_registry_and_its_artifacts_live_on_a_tracking_server_over_postgres(
    copied_home: Path,
    demo_env: dict[str, str],
    fresh_database: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow import MlflowClient

    ds = read_json(copied_home / "demo" / "summary.json")["ds"]
    backend, destination = fresh_database("mlflow"), tmp_path / "server-artifacts"
    with tracking_server(backend, destination, tmp_path / "mlflow-server.log") as uri:
        for key, value in {"PCTR_HOME": str(copied_home), **demo_env, "PCTR_TRACKING__URI": uri}.items():
            monkeypatch.setenv(key, value)
        cfg = load_config()
        layout = Layout(cfg.home)
        in_home = sorted(layout.mlflow_artifacts.rglob("*"))

        assert cli.main(["register", "--ds", ds]) == 0
        registered = read_json(layout.stage_output("register", ds) / "_stats.json")
        # a retried register finds its run by tags: a search that the server answers from PostgreSQL
        retried = register.run(cfg, ds)
        assert (retried["run_id"], retried["model_version"]) == (registered["run_id"], registered["model_version"])
        # the demo's day passed its gate; on an empty registry its version is the first and goes live
        assert registered["tracking_uri"] == uri
        assert (registered["model_version"], registered["promoted"], registered["champion_version"]) == ("1", True, "1")

        client = MlflowClient(uri)
        run = client.get_run(registered["run_id"])
        assert run.data.metrics["auc"] == pytest.approx(load_evaluation(cfg, ds)["metrics"]["auc"])
        assert run.data.tags["ds"] == ds
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # the client holds no path of the store
        assert client.get_model_version_by_alias(cfg.model_name, "champion").run_id == registered["run_id"]

        # what a warm start reads: the champion's weights and feature statistics, downloaded through the server
        version, weights, feature_stats = download_ranker_weights(cfg, "champion", tmp_path / "warm_start")
        trained = sha256_file(ranker_dir(cfg, ds) / RANKER_WEIGHTS)
        assert (version, sha256_file(weights), feature_stats.stat().st_size > 0) == ("1", trained, True)

    # the artifacts are the server's (under its destination), none went to the home
    stored = list(destination.rglob(RANKER_WEIGHTS))
    assert [sha256_file(path) for path in stored] == [trained]
    assert sorted(layout.mlflow_artifacts.rglob("*")) == in_home
    # runs, versions and aliases are rows of the server's database
    assert _rows(backend, f"select status from runs where run_uuid = '{registered['run_id']}'") == [("FINISHED",)]
    assert _rows(backend, "select name, version from model_versions") == [(cfg.model_name, 1)]
    assert _rows(backend, "select name, alias, version from registered_model_aliases") == [
        (cfg.model_name, "champion", 1)
    ]


def test_airflow_on_postgres_runs_a_day_with_two_tasks_at_once(
    copied_home: Path,
    demo_env: dict[str, str],
    fresh_database: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ds = read_json(copied_home / "demo" / "summary.json")["ds"]
    env = {
        "PCTR_HOME": str(copied_home),
        **demo_env,
        "PCTR_ORCHESTRATION__DATABASE_URL": fresh_database("airflow"),
        # the schedule's first day is the demo's closed day; a failed task fails the run at once
        "PCTR_ORCHESTRATION__START_DATE": ds,
        "PCTR_ORCHESTRATION__RETRIES": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config()

    started = time.time()
    with airflow_ui(cfg, parallelism=PARALLELISM) as ui, PeakMemory(ui.pid) as memory:
        ready = time.time()  # `make ui` migrated the empty database before it started Airflow
        # a DAG can be unpaused once the DAG processor has stored it
        wait(lambda: query(cfg, "select count(*) from dag where dag_id = 'pctr_daily'") == [(1,)], 300, "pctr_daily")
        services = memory.sample() / MIB  # scheduler, DAG processor, API server, triggerer, idle workers
        airflow(cfg, "dags", "unpause", "pctr_daily")
        wait_for_runs(cfg, [ds], "scheduled", ui)
        ran = time.time()
    print(
        f"Airflow on PostgreSQL, parallelism {PARALLELISM}: make ui ready in {ready - started:.0f} s, the day's run"
        f" in {ran - ready:.0f} s; RSS of make ui's tree: {services:.0f} MiB idle, peak {memory.peak_mib:.0f} MiB"
    )

    tasks = task_instances(cfg, ds)
    assert {task: state for task, (state, _, _) in tasks.items()} == {stage.name: "success" for stage in DAILY_STAGES}
    (_, train_start, train_end), (_, retrieval_start, retrieval_end) = tasks["train"], tasks["train_retrieval"]
    # both started before either ended: they ran at the same time
    assert max(train_start, retrieval_start) < min(train_end, retrieval_end)
