"""The local runner: the stages of one day (or hour) in order, in this process, without Airflow (``pctr run-day``,
``pctr run-hour``)."""

from __future__ import annotations

import time
from typing import Any

from core.config import PctrConfig
from core.layout import is_hour
from jobs.pipeline import DAILY_STAGES, HOURLY_STAGES, run_stage


def run_day(
    cfg: PctrConfig, ds: str, until: str | None = None, log: Any = print, keep_spark: bool = False
) -> dict[str, Any]:
    """Run the stages of ds in order, without Airflow (``pctr run-day``); stop after ``until`` if given.

    ``ds`` may be an hour (``YYYY-MM-DDTHH``): then the hourly refresh's stages run (``pctr run-hour``).
    Spark is stopped after the last of consecutive Spark stages, unless ``keep_spark``: a caller that
    runs several days keeps one session for all of them and stops it itself (``core.spark.stop_spark``).
    """
    stages = HOURLY_STAGES if is_hour(ds) else DAILY_STAGES
    names = [stage.name for stage in stages]
    if until is not None and until not in names:
        raise ValueError(f"unknown stage {until!r}; stages: {', '.join(names)}")
    report: dict[str, Any] = {"ds": ds, "stages": {}}
    last = names.index(until) if until is not None else len(stages) - 1
    for i, stage in enumerate(stages[: last + 1]):
        started = time.time()
        log(f"[{ds}] {stage.name} ...")
        next_uses_spark = i < last and stages[i + 1].spark
        stats = run_stage(cfg, stage.name, ds, keep_spark=keep_spark or next_uses_spark)
        seconds = round(time.time() - started, 2)
        report["stages"][stage.name] = {"status": "ok", "seconds": seconds}
        report[stage.name] = stats
        log(f"[{ds}] {stage.name} ok ({seconds} s)")
    return report
