"""Ranker training stage: the baseline (``jobs.fit_baseline``), then ``horovodrun -np N`` ranker workers.

The launcher writes the exact configuration the workers use to the run directory, so the workers
(separate processes started by horovodrun) see the same values whatever overrides the caller had.

Hyperparameters: every ``train.search_every_days`` the run searches them (the baseline's L2 strength and
the ranker's grid, on the validation split) and records what won (``Layout.ranker_setting``); the runs in
between train with the recorded setting, one fit each, so that a daily run stays fast and reproducible.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.config import PctrConfig
from core.io import Stats, read_json, write_json_atomic, write_stats, write_text_atomic
from core.layout import BASELINE_FIT, CHECKPOINTS, Layout, parse_ds, ranker_dir

RUN_CONFIG = "config.json"
# what the workers print at the end of an epoch or a trial, at early stopping and when the baseline starts
PROGRESS = re.compile(r"(epoch \d+/\d+ .*|early stopping .*|baseline .*|search .*)$")


def recorded_setting(cfg: PctrConfig) -> dict[str, Any] | None:
    path = Layout(cfg.home).ranker_setting
    return read_json(path) if path.exists() else None


def search_due(cfg: PctrConfig, ds: str, recorded: dict[str, Any] | None) -> bool:
    """Whether the run of ``ds`` searches: none recorded yet, the record is ``search_every_days`` old, or
    ``ds`` is the day that searched (a rerun writes what the first run wrote: the search's winner).

    A backfill of another day before the record trains with it: the setting in force is the latest one.
    """
    if cfg.train.search_every_days == 0:
        return False
    age = (parse_ds(ds) - parse_ds(recorded["searched_on"])).days if recorded else None
    return age is None or age == 0 or age >= cfg.train.search_every_days


def run_config(cfg: PctrConfig, recorded: dict[str, Any] | None, searching: bool) -> PctrConfig:
    """The configuration the run trains with: the caller's, with the recorded setting unless it searches."""
    if searching or recorded is None:
        return cfg
    setting = {
        "learning_rate": recorded["learning_rate"],
        "embedding_weight_decay": recorded["embedding_weight_decay"],
        "baseline_c_values": (recorded["baseline_c"],),
    }
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=setting)})


def trained_config(cfg: PctrConfig, ds: str) -> PctrConfig:
    """The configuration the finished run of ``ds`` trained with: its run directory's, with the setting it
    trained with (the recorded one, or its own search's winner)."""
    out = ranker_dir(cfg, ds)
    given = PctrConfig.model_validate_json((out / RUN_CONFIG).read_text())
    return run_config(given, read_json(out / "_stats.json")["setting"], searching=False)


def horovod_command(
    cfg: PctrConfig, config_path: Path, ds: str, warm_start: tuple[Path, Path] | None, search: bool = False
) -> list[str]:
    launcher = Path(sys.executable).with_name(cfg.train.horovodrun)
    warm_start_args = (
        ["--init-weights", str(warm_start[0]), "--feature-stats", str(warm_start[1])] if warm_start else []
    )
    return [
        str(launcher if launcher.exists() else cfg.train.horovodrun),
        *horovod_placement(cfg), "--gloo",
        sys.executable, "-m", "jobs.train_worker", "--config", str(config_path), "--ds", ds, *warm_start_args,
        *(["--search"] if search else []),
    ]  # fmt: skip


def horovod_placement(cfg: PctrConfig) -> list[str]:
    """horovodrun's options placing ``train.num_proc`` workers on ``train.hosts`` (default: this machine)."""
    n = cfg.train.num_proc
    hosts = cfg.train.hosts or (f"localhost:{n}",)
    slots = sum(int(host.partition(":")[2] or 1) for host in hosts)
    if slots < n:
        raise ValueError(f"train.hosts {list(hosts)} offer {slots} slots for train.num_proc={n} workers")
    ssh = [
        *(["--ssh-port", str(cfg.train.ssh_port)] if cfg.train.ssh_port else []),
        *(["--ssh-identity-file", cfg.train.ssh_identity_file] if cfg.train.ssh_identity_file else []),
    ]
    return ["-np", str(n), "-H", ",".join(hosts), *ssh]


def baseline_command(config_path: Path, ds: str, feature_stats: Path | None) -> list[str]:
    stats_args = ["--feature-stats", str(feature_stats)] if feature_stats else []
    return [sys.executable, "-m", "jobs.fit_baseline", "--config", str(config_path), "--ds", ds, *stats_args]


def training_env() -> dict[str, str]:
    """The environment of the training processes: unbuffered output (the epoch lines are echoed as they come).

    horovodrun hands its whole environment to every worker, over ssh too: without this process's own ssh session
    (if any), a worker's ``SSH_CONNECTION`` is the one it was started through, which it records.
    """
    own_session = ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY")
    return {
        **{key: value for key, value in os.environ.items() if key not in own_session},
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }


def run_checked(command: list[str], log_path: Path, env: dict[str, str]) -> None:
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

    With the recorded hyperparameters, or, when a search is due (``search_due``), searching them and
    recording the winner. An interrupted run (a crash, a killed task that Airflow retries) resumes from
    the checkpoint of its last finished epoch; the checkpoints are removed once the run succeeds.
    ``peak_memory_mib`` is the peak summed RSS of this process and every training process under it.
    """
    from core.resources import PeakMemory

    started = time.time()
    out = ranker_dir(cfg, ds)
    out.mkdir(parents=True, exist_ok=True)
    recorded = recorded_setting(cfg)
    searching = search_due(cfg, ds, recorded)
    cfg = run_config(cfg, recorded, searching)
    config_path = out / RUN_CONFIG
    write_text_atomic(config_path, cfg.model_dump_json(indent=2))
    warm_start = None
    if cfg.train.warm_start is not None:
        from core.tracking import download_ranker_weights

        warm_start = download_ranker_weights(cfg, cfg.train.warm_start, out / "warm_start")

    feature_stats = warm_start[2] if warm_start else None
    command = horovod_command(cfg, config_path, ds, warm_start[1:] if warm_start else None, search=searching)
    env = training_env()
    with PeakMemory() as memory:
        run_checked(baseline_command(config_path, ds, feature_stats), out / "baseline.log", env)
        run_checked(command, out / "train.log", env)
    result = read_json(out / "result.json")
    baseline = read_json(out / BASELINE_FIT)
    setting = _setting(cfg, ds, result, baseline, recorded if not searching else None)
    if searching:
        write_json_atomic(Layout(cfg.home).ranker_setting, {**setting, "trials": result["search"]["trials"]})
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    stats_out: Stats = {
        "stage": "train",
        "ds": ds,
        "num_proc": cfg.train.num_proc,
        "warm_start_version": warm_start[0] if warm_start else None,
        "command": " ".join(command),
        **result,
        "setting": {**setting, "searched": searching},
        "baseline": baseline,
        "peak_memory_mib": memory.peak_mib,
        "log": str(out / "train.log"),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(out, stats_out)


def _setting(
    cfg: PctrConfig, ds: str, result: dict[str, Any], baseline: dict[str, Any], recorded: dict[str, Any] | None
) -> dict[str, Any]:
    """The hyperparameters the run trained with, and the day whose search chose them (None: the configured ones)."""
    chosen = result["search"]["best"] if result["search"] else {
        "learning_rate": cfg.train.learning_rate, "embedding_weight_decay": cfg.train.embedding_weight_decay,
    }  # fmt: skip
    searched_on = ds if result["search"] else recorded["searched_on"] if recorded else None
    return {"searched_on": searched_on, **chosen, "baseline_c": baseline["c"]}
