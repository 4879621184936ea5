from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from entrypoints.airflow_local import free_port
from entrypoints.spark_cluster import MASTER_CLASS, StandaloneCluster


def _stand_in(*args: str) -> subprocess.Popen:
    """A process that sleeps, with ``args`` on its command line, once it has started (its line is then its own)."""
    sleeper = "import time; print('up', flush=True); time.sleep(60)"
    process = subprocess.Popen(
        [sys.executable, "-c", sleeper, *args], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None and process.stdout.readline() == "up\n"
    return process


def test_stop_leaves_a_process_alone_that_took_a_stale_pid(tmp_path: Path) -> None:
    """A pid file outlives its daemon; the pid may now be another process's, which stop must not end."""
    other = _stand_in()
    try:
        (tmp_path / "pids").mkdir()
        (tmp_path / "pids" / "master.pid").write_text(f"{other.pid}\n")
        StandaloneCluster(tmp_path).stop()
        assert other.poll() is None
        assert not (tmp_path / "pids" / "master.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_start_refuses_while_a_daemon_of_an_earlier_start_runs(tmp_path: Path) -> None:
    daemon = _stand_in(MASTER_CLASS)  # its command line names the master's class, as the daemon's does
    # free ports: were the check to miss, the cluster this starts must not take the default ones
    cluster = StandaloneCluster(tmp_path, port=free_port(), webui_port=free_port())
    try:
        (tmp_path / "pids").mkdir()
        (tmp_path / "pids" / "master.pid").write_text(f"{daemon.pid}\n")
        with pytest.raises(RuntimeError, match=r"is running \(master\): stop it first"):
            cluster.start()
        cluster.stop()
        with pytest.raises(ProcessLookupError):  # ended, and reaped by stop (it is this process's child)
            os.kill(daemon.pid, 0)
        assert not (tmp_path / "pids" / "master.pid").exists()
    finally:
        cluster.stop()
        daemon.kill()
        daemon.wait()
