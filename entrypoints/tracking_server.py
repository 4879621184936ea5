"""An MLflow tracking server on loopback: runs and the registry in a database, artifacts through its proxy.

The cluster profile's ``tracking.uri`` points at it. Clients send and fetch artifacts through the server
(``mlflow-artifacts:/`` URIs), which keeps them under ``--artifacts-destination``: no client needs a path
or credentials of the artifact store. One worker: a local server with few clients, and each worker is a
few hundred MiB.

``python -m entrypoints.tracking_server start|stop --state-dir DIR`` keeps the server's pid file and log in DIR
(and its artifacts, unless ``--artifacts-destination`` says otherwise) and listens on the port of the configured
``tracking.uri`` unless ``--port`` says otherwise. ``tracking_server`` runs one for the length of a ``with`` block.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from core.config import load_config
from core.processes import daemon_pid, stop_process_group
from entrypoints.airflow_local import free_port, wait_http_ready

PID_FILE = "server.pid"
LOG_FILE = "server.log"
# MLflow's job runner (GenAI evaluation, trace rollups: unused here) would start beside the server, with seven
# task-queue consumers: 0.7 GiB more RSS (measured; beside `make ui`'s `mlflow ui` on sqlite, with its default
# four workers, 2.8 GiB more)
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# a first start on an empty database creates MLflow's tables (tens of migrations) before it answers
READY_SECONDS = 180.0
STOP_GRACE_SECONDS = 20.0
# in the server's command line (`python -m mlflow server ...`): a pid file's pid still names the server
SERVER_MARKER = "mlflow"


def server_command(backend_store_uri: str, artifacts_destination: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts_destination),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def start(backend_store_uri: str, artifacts_destination: Path, port: int, log_file: Path) -> subprocess.Popen:
    """Start the server in a session of its own (it outlives a ``start`` command) and return once it answers."""
    artifacts_destination.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            server_command(backend_store_uri, artifacts_destination, port),
            env={**os.environ, **SERVER_ENV}, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_http_ready(f"http://127.0.0.1:{port}/health", proc, f"mlflow server (log: {log_file})", READY_SECONDS)
    except BaseException:
        stop_process_group(proc.pid, STOP_GRACE_SECONDS)
        proc.wait()
        raise
    return proc


@contextlib.contextmanager
def tracking_server(backend_store_uri: str, artifacts_destination: Path, log_file: Path) -> Iterator[str]:
    """A server on a free loopback port for the ``with`` block; yields its URI (``tracking.uri``)."""
    port = free_port()
    proc = start(backend_store_uri, artifacts_destination, port, log_file)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(proc.pid, STOP_GRACE_SECONDS)
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start the server unless it runs; return once it answers")
    stop_parser = commands.add_parser("stop", help="stop the server started with the same --state-dir")
    for sub in (start_parser, stop_parser):
        sub.add_argument("--state-dir", type=Path, required=True, help=f"holds {PID_FILE} and {LOG_FILE}")
    start_parser.add_argument("--port", type=int, help="default: the port of the configured tracking.uri")
    start_parser.add_argument("--backend-store-uri", required=True, help="e.g. postgresql+psycopg2://u:p@host/db")
    start_parser.add_argument("--artifacts-destination", type=Path, help="default: STATE_DIR/artifacts")
    args = parser.parse_args(argv)
    pid_file = args.state_dir / PID_FILE
    pid = daemon_pid(pid_file, SERVER_MARKER)
    if args.command == "stop":
        if pid is not None:
            stop_process_group(pid, STOP_GRACE_SECONDS)
        pid_file.unlink(missing_ok=True)
        return 0
    if pid is not None:
        return 0
    port = args.port or urlsplit(load_config().tracking.uri or "").port
    if port is None:
        parser.error("--port, or a tracking.uri with a port in the configuration (e.g. PCTR_CONFIG=conf/cluster.toml)")
    destination = (args.artifacts_destination or args.state_dir / "artifacts").resolve()
    log_file = args.state_dir / LOG_FILE
    proc = start(args.backend_store_uri, destination, port, log_file)
    pid_file.write_text(f"{proc.pid}\n")
    print(f"MLflow tracking server: http://127.0.0.1:{port} (artifacts: {destination}, log: {log_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
