"""Hourly refresh of the ranker (``pctr_hourly``): the live model warm-started and trained on the newest closed hours.

The run of hour H trains the champion (a daily version, or the latest refresh of one) on the hourly
training set (``jobs.training_set``: the ``hourly.train_hours`` hours ending H-2, validated on H-1) for
``hourly.epochs`` at ``hourly.learning_rate``. It keeps what the daily run it descends from fixed: the
architecture, batch size and weight decay it trained with, its feature statistics (the input signature's
buckets and scales) and its fitted baseline, the ranker's frozen first-order part. Nothing is searched.
The version it starts from is recorded in the run directory on the first attempt, so that a rerun of
the hour (a retry, a backfill) starts from the same weights whatever is live by then.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from core.config import PctrConfig
from core.io import Stats, read_json, write_json_atomic, write_stats, write_text_atomic
from core.layout import BASELINE_FIT, BASELINE_WEIGHTS, CHECKPOINTS, is_hour, ranker_dir
from jobs.train import RUN_CONFIG, horovod_command, run_checked, trained_config, training_env

WARM_START = "warm_start.json"
# what the refresh keeps of the daily run it descends from: the shape of the weights it starts from
KEPT_TRAIN_SETTINGS = ("embedding_dim", "hidden_units", "max_hash_buckets", "batch_size", "embedding_weight_decay")


def base_run(cfg: PctrConfig, ds: str) -> dict[str, Any]:
    """The cadence of the run of ``ds`` and the daily run it descends from (``base_ds``; for an hourly run also
    ``daily_version`` and ``warm_start_version``)."""
    if not is_hour(ds):
        return {"cadence": "daily", "base_ds": ds}
    trained = read_json(ranker_dir(cfg, ds) / "_stats.json")
    return {
        "cadence": "hourly",
        "base_ds": trained["daily_ds"],
        "daily_version": trained["daily_version"],
        "warm_start_version": trained["warm_start_version"],
    }


def _start(cfg: PctrConfig, hour: str) -> dict[str, str]:
    """The version the run of ``hour`` starts from (the champion on its first attempt) and its daily ancestry."""
    from core.champion import champion
    from core.tracking import mlflow_client

    recorded = ranker_dir(cfg, hour) / WARM_START
    if recorded.exists():
        return read_json(recorded)
    client = mlflow_client(cfg)
    live = champion(client, cfg.model_name)
    if live is None:
        raise LookupError(f"{cfg.model_name} has no champion: the hourly run refreshes the live ranker; run pctr_daily")
    tags = client.get_model_version(cfg.model_name, live.version).tags
    start = {
        "version": live.version,
        "daily_version": tags.get("daily_version", live.version),
        "daily_ds": live.base_ds,
    }
    write_json_atomic(recorded, start)
    return start


def refresh_config(cfg: PctrConfig, daily: PctrConfig) -> PctrConfig:
    """The caller's configuration with what the daily run's weights need, and the refresh's epochs and learning rate."""
    kept = {name: getattr(daily.train, name) for name in KEPT_TRAIN_SETTINGS}
    update = {**kept, "epochs": cfg.hourly.epochs, "learning_rate": cfg.hourly.learning_rate, "warm_start": None}
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=update)})


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Train the live ranker further on the hours before ``ds`` (``YYYY-MM-DDTHH``) with ``horovodrun``."""
    from core.resources import PeakMemory
    from core.tracking import download_ranker_weights

    started = time.time()
    out = ranker_dir(cfg, ds)
    out.mkdir(parents=True, exist_ok=True)
    start = _start(cfg, ds)
    daily_out = ranker_dir(cfg, start["daily_ds"])
    for name in (BASELINE_WEIGHTS, BASELINE_FIT):
        shutil.copy2(daily_out / name, out / name)
    shutil.copytree(daily_out / "baseline_saved_model", out / "baseline_saved_model", dirs_exist_ok=True)
    run_cfg = refresh_config(cfg, trained_config(cfg, start["daily_ds"]))
    config_path = out / RUN_CONFIG
    write_text_atomic(config_path, run_cfg.model_dump_json(indent=2))
    _, weights, feature_stats = download_ranker_weights(cfg, start["version"], out / "warm_start")
    command = horovod_command(run_cfg, config_path, ds, (weights, feature_stats))
    with PeakMemory() as memory:
        run_checked(command, out / "train.log", training_env())
    result = read_json(out / "result.json")
    baseline = read_json(out / BASELINE_FIT)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    setting = {
        "searched_on": None, "learning_rate": run_cfg.train.learning_rate,
        "embedding_weight_decay": run_cfg.train.embedding_weight_decay, "baseline_c": baseline["c"], "searched": False,
    }  # fmt: skip
    stats: Stats = {
        "stage": "train_hourly",
        "ds": ds,
        "num_proc": run_cfg.train.num_proc,
        "warm_start_version": start["version"],
        "daily_version": start["daily_version"],
        "daily_ds": start["daily_ds"],
        "command": " ".join(command),
        **result,
        "setting": setting,
        "baseline": baseline,
        "peak_memory_mib": memory.peak_mib,
        "log": str(out / "train.log"),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(out, stats)
