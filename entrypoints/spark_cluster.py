"""A Spark standalone cluster on this machine's loopback: one master and its workers, for the cluster profile.

Started with the ``spark-class`` launcher of the pyspark wheel (no Spark download), each daemon in a session
of its own so that it outlives the command that started it (``python -m entrypoints.spark_cluster start
--dir D``) and is stopped by the pid file it leaves in ``D`` (``stop --dir D``); tests use ``StandaloneCluster``
as a context manager. Workers run their executors' work directories under ``D``; the pctr home is read and
written by the same paths by the driver and every executor.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from core.processes import daemon_pid, stop_process_group

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# the heap of each master and worker daemon (Spark's default: 1g each); they only schedule and keep state
DAEMON_MEMORY = "256m"
STOP_SECONDS = 30.0


def spark_home() -> Path:
    """The Spark distribution inside the pyspark wheel (its ``bin/spark-class`` and ``jars/``)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyspark is not installed in this interpreter's environment")
    return Path(spec.submodule_search_locations[0])


@dataclass(frozen=True)
class StandaloneCluster:
    """A master on ``host:port`` (web UI on ``webui_port``) and ``workers`` workers of ``worker_cores`` cores and
    ``worker_memory`` each (enough for one executor of ``spark.executor.memory``), state under ``directory``."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = 7077
    # not Spark's 8080: `make ui` serves Airflow there
    webui_port: int = 8070
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"

    def _pid_file(self, name: str) -> Path:
        return self.directory / "pids" / f"{name}.pid"

    def _daemons(self) -> list[tuple[str, str, list[str]]]:
        """(name, class, arguments) of every daemon, the master first."""
        master = (
            "master",
            MASTER_CLASS,
            ["--host", self.host, "--port", str(self.port), "--webui-port", str(self.webui_port)],
        )
        workers = [
            (
                f"worker-{i}",
                WORKER_CLASS,
                # ports 0: any free one, so workers never collide with each other or another service
                [
                    self.master_url,
                    "--host",
                    self.host,
                    "--port",
                    "0",
                    "--webui-port",
                    "0",
                    "--cores",
                    str(self.worker_cores),
                    "--memory",
                    self.worker_memory,
                    "--work-dir",
                    str(self.directory / "work" / f"worker-{i}"),
                ],
            )  # fmt: skip
            for i in range(1, self.workers + 1)
        ]
        return [master, *workers]

    def start(self, timeout: float = 120.0) -> None:
        """Start the master and the workers; return once the master counts every worker alive.

        Raises ``RuntimeError`` if a daemon of a previous start still runs, a daemon exits, or the workers are
        not all alive within ``timeout`` seconds (naming the daemons' logs); what was started is stopped then.
        """
        running = [name for name, cls, _ in self._daemons() if daemon_pid(self._pid_file(name), cls) is not None]
        if running:
            raise RuntimeError(
                f"a Spark cluster under {self.directory} is running ({', '.join(running)}): stop it first"
            )
        home = spark_home()
        env = {
            **os.environ,
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": self.host,
            "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
            # a taken port fails the daemon, instead of Spark binding the next free one where nothing looks
            "SPARK_DAEMON_JAVA_OPTS": "-Dspark.port.maxRetries=0",
            # Spark would otherwise read spark-defaults.conf and spark-env.sh of whatever SPARK_CONF_DIR is set
            "SPARK_CONF_DIR": str(self.directory / "conf"),
        }
        (self.directory / "conf").mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        self._pid_file("master").parent.mkdir(parents=True, exist_ok=True)
        processes: dict[str, subprocess.Popen] = {}
        try:
            for name, cls, args in self._daemons():
                with open(self.directory / "logs" / f"{name}.log", "ab") as log:
                    processes[name] = subprocess.Popen(
                        [str(home / "bin" / "spark-class"), cls, *args],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                self._pid_file(name).write_text(f"{processes[name].pid}\n")
            self._wait_for_workers(processes, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_for_workers(self, processes: dict[str, subprocess.Popen], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        alive = 0
        while time.monotonic() < deadline:
            exited = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
            if exited:
                raise RuntimeError(f"Spark daemons exited before the cluster was up: {exited}; {self._logs_hint()}")
            try:
                status = self.status()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                status = {}  # the master's web UI is not up yet
            if status and status["url"] != self.master_url:
                raise RuntimeError(f"{self.webui_url} is the web UI of another master, {status['url']}")
            alive = sum(w["state"] == "ALIVE" for w in status.get("workers", []))
            if alive == self.workers:
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"the Spark master at {self.webui_url} counted {alive} of {self.workers} workers alive after "
            f"{timeout:.0f} s; {self._logs_hint()}"
        )

    def _logs_hint(self) -> str:
        return f"see the logs in {self.directory / 'logs'}"

    def status(self) -> dict[str, Any]:
        """The master's state as its web UI reports it (``/json/``): workers, active and completed applications."""
        with urllib.request.urlopen(f"{self.webui_url}/json/", timeout=5.0) as response:
            return json.load(response)

    def stop(self) -> None:
        """Stop the workers (and their executors), then the master; those already gone are skipped.

        Each daemon leads a process group of its own, executors included: the group is ended, by the id in
        its pid file, once the pid is checked to be still that daemon's.
        """
        for name, cls, _ in reversed(self._daemons()):
            pid_file = self._pid_file(name)
            pid = daemon_pid(pid_file, cls)
            if pid is not None:
                stop_process_group(pid, STOP_SECONDS)
            pid_file.unlink(missing_ok=True)

    def __enter__(self) -> StandaloneCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.spark_cluster", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--dir", type=Path, required=True, help="work directories, logs and pid files")
    parser.add_argument("--host", default=StandaloneCluster.host)
    parser.add_argument("--port", type=int, default=StandaloneCluster.port)
    parser.add_argument("--webui-port", type=int, default=StandaloneCluster.webui_port)
    parser.add_argument("--workers", type=int, default=StandaloneCluster.workers)
    args = parser.parse_args(argv)
    cluster = StandaloneCluster(
        args.dir.resolve(), host=args.host, port=args.port, webui_port=args.webui_port, workers=args.workers
    )
    if args.action == "start":
        cluster.start()
        print(f"Spark master {cluster.master_url} (web UI {cluster.webui_url}), {cluster.workers} workers alive")
    else:
        cluster.stop()
        print(f"Spark cluster under {cluster.directory} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
