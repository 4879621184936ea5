"""``make ui``: the Airflow UI (standalone: scheduler, API server, DAG processor) and the MLflow UI over $PCTR_HOME.

Ctrl-C stops both, with every process under them: SIGINT first (SIGTERM leaves Airflow's scheduler
and workers running), then SIGKILL to what is left after a grace period.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from core.config import load_config
from core.processes import ChildProcesses
from core.tracking import tracking_uri
from entrypoints.airflow_local import airflow_env, migrate
from entrypoints.tracking_server import SERVER_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--parallelism", type=int, default=4, help="tasks the scheduler runs at once")
    args = parser.parse_args(argv)
    # a process started in the background inherits SIGINT ignored: restore Ctrl-C, and stop the same way on SIGTERM
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cfg = load_config()
    migrate(cfg)
    env = airflow_env(cfg, parallelism=args.parallelism)
    # a single-user local UI: no login page (set it to False, or use a real auth manager, on a shared host)
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    env["AIRFLOW__API__PORT"] = str(args.airflow_port)
    env["AIRFLOW__API__HOST"] = "127.0.0.1"
    # the scheduler's task processes report to {base_url}/execution/; without it, to port 8080 whatever the port
    env["AIRFLOW__API__BASE_URL"] = f"http://127.0.0.1:{args.airflow_port}"
    children = ChildProcesses(grace=30.0)
    airflow = children.popen([sys.executable, "-m", "airflow", "standalone"], env=env)
    if cfg.tracking.uri:  # a tracking server serves its own UI
        servers, mlflow_url = [airflow], cfg.tracking.uri
    else:
        mlflow = children.popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(cfg),
             "--host", "127.0.0.1", "--port", str(args.mlflow_port), "--workers", "1"],
            env={**os.environ, **SERVER_ENV},
        )  # fmt: skip
        servers, mlflow_url = [airflow, mlflow], f"http://127.0.0.1:{args.mlflow_port}"
    print(f"Airflow UI: http://127.0.0.1:{args.airflow_port}   MLflow UI: {mlflow_url}")
    print(f"state: {cfg.home}   (Ctrl-C stops)", flush=True)
    try:
        while all(server.poll() is None for server in servers):
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        children.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
