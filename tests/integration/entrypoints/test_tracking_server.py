"""``python -m entrypoints.tracking_server start|stop`` as a make target runs it: one server per state directory.

A sqlite backend store keeps this test free of PostgreSQL (tests/e2e/test_postgres_services.py runs it there).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from entrypoints.airflow_local import free_port
from entrypoints.tracking_server import LOG_FILE, PID_FILE, main

pytestmark = pytest.mark.integration


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_serves_artifacts_from_the_state_dir_once_and_stop_ends_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    state, uri = tmp_path / "server", f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("PCTR_TRACKING__URI", uri)  # the port it listens on
    start = ["start", "--state-dir", str(state)]
    assert main([*start, "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    pid = int((state / PID_FILE).read_text())
    try:
        assert httpx.get(f"{uri}/health").text == "OK"
        # a second start finds it running: no second server (its backend store would not even open)
        assert main([*start, "--backend-store-uri", "sqlite:////nonexistent/mlflow.db"]) == 0
        assert int((state / PID_FILE).read_text()) == pid

        (tmp_path / "note.txt").write_text("through the proxy")
        client = mlflow.MlflowClient(uri)
        run = client.create_run(client.create_experiment("proxied"))
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        assert [p.read_text() for p in (state / "artifacts").rglob("note.txt")] == ["through the proxy"]
        assert "GET /health" in (state / LOG_FILE).read_text()
    finally:
        assert main(["stop", "--state-dir", str(state)]) == 0
    assert not _group_alive(pid)  # the server and its uvicorn worker
    assert not (state / PID_FILE).exists()
    assert main(["stop", "--state-dir", str(state)]) == 0  # stopping a stopped server is no error
