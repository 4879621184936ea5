"""The local runner: the stages of one day in order, in this process, without Airflow (``pctr run-day``)."""

from __future__ import annotations

import time
from typing import Any

from core.config import PctrConfig
from jobs.pipeline import DAILY_STAGES, STAGES_BY_NAME, run_stage


def run_day(
    cfg: PctrConfig, ds: str, until: str | None = None, log: Any = print, keep_spark: bool = False
) -> dict[str, Any]:
    """Run the stages of ds in order, without Airflow (``pctr run-day``); stop after ``until`` if given.

    Spark is stopped after the last of consecutive Spark stages, unless ``keep_spark``: a caller that
    runs several days keeps one session for all of them and stops it itself (``core.spark.stop_spark``).
    """
    if until is not None and until not in STAGES_BY_NAME:
        raise ValueError(f"unknown stage {until!r}; stages: {', '.join(STAGES_BY_NAME)}")
    report: dict[str, Any] = {"ds": ds, "stages": {}}
    last = DAILY_STAGES.index(STAGES_BY_NAME[until]) if until is not None else len(DAILY_STAGES) - 1
    for i, stage in enumerate(DAILY_STAGES[: last + 1]):
        started = time.time()
        log(f"[{ds}] {stage.name} ...")
        next_uses_spark = i < last and DAILY_STAGES[i + 1].spark
        stats = run_stage(cfg, stage.name, ds, keep_spark=keep_spark or next_uses_spark)
        seconds = round(time.time() - started, 2)
        report["stages"][stage.name] = {"status": "ok", "seconds": seconds}
        report[stage.name] = stats
        log(f"[{ds}] {stage.name} ok ({seconds} s)")
    return report
