"""DAG integrity: the DAG folder imports cleanly, is wired from the stage list, and stays cheap to parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.pipeline import DAILY_STAGES

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
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    from airflow.dag_processing.dagbag import DagBag

    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return DagBag(dag_folder=str(REPO / "dags"))


def test_dag_folder_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert "pctr_daily" in dagbag.dag_ids


def test_pctr_daily_is_wired_from_the_stage_list(dagbag) -> None:
    dag = dagbag.dags["pctr_daily"]
    assert {t.task_id for t in dag.tasks} == {s.name for s in DAILY_STAGES}
    for stage in DAILY_STAGES:
        assert dag.get_task(stage.name).upstream_task_ids == set(stage.after)
    assert dag.catchup is True
    roots = [t.task_id for t in dag.roots]
    assert roots == ["validate_raw"]
    assert [t.task_id for t in dag.leaves] == ["publish"]


def test_dag_files_import_no_heavy_modules() -> None:
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('pctr_daily', {str(REPO / 'dags' / 'pctr_daily.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
