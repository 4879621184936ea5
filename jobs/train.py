"""Ranker training stage: the baseline (``jobs.fit_baseline``), then ``horovodrun -np N`` ranker workers.

The launcher writes the exact configuration the workers use to the run directory, so the workers
(separate processes started by horovodrun) see the same values whatever overrides the caller had.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from core.config import PctrConfig
from core.io import Stats, read_json, write_stats, write_text_atomic
from core.layout import BASELINE_FIT, CHECKPOINTS, ranker_dir

# what the workers print at the end of an epoch, at early stopping and when the baseline starts
PROGRESS = re.compile(r"(epoch \d+/\d+ .*|early stopping .*|baseline .*)$")


def horovod_command(cfg: PctrConfig, config_path: Path, ds: str, warm_start: tuple[Path, Path] | None) -> list[str]:
    n = cfg.train.num_proc
    launcher = Path(sys.executable).with_name(cfg.train.horovodrun)
    warm_start_args = (
        ["--init-weights", str(warm_start[0]), "--feature-stats", str(warm_start[1])] if warm_start else []
    )
    return [
        str(launcher if launcher.exists() else cfg.train.horovodrun),
        "-np", str(n), "-H", f"localhost:{n}", "--gloo",
        sys.executable, "-m", "jobs.train_worker", "--config", str(config_path), "--ds", ds, *warm_start_args,
    ]  # fmt: skip


def baseline_command(config_path: Path, ds: str, feature_stats: Path | None) -> list[str]:
    stats_args = ["--feature-stats", str(feature_stats)] if feature_stats else []
    return [sys.executable, "-m", "jobs.fit_baseline", "--config", str(config_path), "--ds", ds, *stats_args]


def _run_checked(command: list[str], log_path: Path, env: dict[str, str]) -> None:
    """``_run_logged``, raising with the log's last lines when ``command`` fails."""
    returncode = _run_logged(command, log_path, env)
    if returncode != 0:
        tail = log_path.read_text().strip().splitlines()[-15:]
        raise RuntimeError(
            f"{Path(command[0]).name} exited {returncode}; last lines of {log_path}:\n" + "\n".join(tail)
        )


def _run_logged(command: list[str], log_path: Path, env: dict[str, str]) -> int:
    """Run ``command`` with its output in ``log_path``; echo its epoch summaries to stdout as ``[train] ...`` lines.

    The echo is what a person watching ``make demo`` or an Airflow task log sees of training progress.
    """
    with (
        open(log_path, "w", buffering=1) as log,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            progress = PROGRESS.search(line)
            if progress:
                print(f"[train] {progress.group(0).rstrip()}", flush=True)
        return proc.wait()


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Fit the logistic-regression baseline (``jobs.fit_baseline``), then train the DeepFM ranker from it.

    An interrupted run (a crash, a killed task that Airflow retries) resumes from the checkpoint of
    its last finished epoch; the checkpoints are removed once the run succeeds. ``peak_memory_mib`` is
    the peak summed RSS of this process and every training process under it.
    """
    from core.resources import PeakMemory

    started = time.time()
    out = ranker_dir(cfg, ds)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    write_text_atomic(config_path, cfg.model_dump_json(indent=2))
    warm_start = None
    if cfg.train.warm_start is not None:
        from core.tracking import download_ranker_weights

        warm_start = download_ranker_weights(cfg, cfg.train.warm_start, out / "warm_start")

    feature_stats = warm_start[2] if warm_start else None
    command = horovod_command(cfg, config_path, ds, warm_start[1:] if warm_start else None)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    with PeakMemory() as memory:
        _run_checked(baseline_command(config_path, ds, feature_stats), out / "baseline.log", env)
        _run_checked(command, out / "train.log", env)
    result = read_json(out / "result.json")
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    stats_out: Stats = {
        "stage": "train",
        "ds": ds,
        "num_proc": cfg.train.num_proc,
        "warm_start_version": warm_start[0] if warm_start else None,
        "command": " ".join(command),
        **result,
        "baseline": read_json(out / BASELINE_FIT),
        "peak_memory_mib": memory.peak_mib,
        "log": str(out / "train.log"),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(out, stats_out)
