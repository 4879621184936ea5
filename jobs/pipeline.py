"""The daily and hourly pipelines as ordered lists of stages: one definition for the CLI, the local runner and
the DAGs. A stage that both run is one module: ``run(cfg, ds)`` takes a day, or an hour ``YYYY-MM-DDTHH``.
The monitor's stage runs per hour too (``MONITOR_STAGES``).

This module must stay cheap to import (the Airflow DAG file imports it): stage modules are imported
only when a stage runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from core.config import PctrConfig
from core.io import Stats


@dataclass(frozen=True)
class Stage:
    """One step of the daily run: ``module.run(cfg, ds, **kwargs) -> Stats``; ``after`` names its inputs.

    ``spark``: the stage opens a Spark session (the local runner keeps it for a next stage that does too).
    ``asset``: the name of the Airflow asset its task produces (``dags.wiring``).
    ``sensor``: the stage waits for a condition: in the DAG a sensor calls ``module.poke(cfg, ds) -> bool``
    until it holds; the local runner and the CLI call ``run``, which raises if it does not hold yet.
    """

    name: str
    module: str
    after: tuple[str, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    help: str = ""
    spark: bool = False
    sensor: bool = False
    # an Airflow asset the stage's task updates when it succeeds (DAGs downstream are scheduled on it)
    asset: str | None = None

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")


# Airflow assets (data-aware scheduling): a day closed by the join, a serving bundle published
JOINED_DAY = "pctr_joined_day"
BUNDLE = "pctr_bundle"

DAILY_STAGES: tuple[Stage, ...] = (
    Stage(
        "wait_for_logs",
        "jobs.wait_for_logs",
        help="wait until every raw hour that ds needs is complete (impressions of ds, clicks to the window's end)",
        sensor=True,
    ),
    Stage(
        "validate_raw",
        "jobs.validate",
        ("wait_for_logs",),
        {"stage": "raw"},
        "Great Expectations gate on the raw logs of ds",
        spark=True,
    ),
    Stage(
        "join_logs",
        "jobs.join_logs",
        ("validate_raw",),
        help="Spark join, quarantine, label, downsample",
        spark=True,
        asset=JOINED_DAY,
    ),
    Stage(
        "validate_joined", "jobs.validate", ("join_logs",), {"stage": "joined"}, "gate on the joined rows", spark=True
    ),
    Stage("build_features", "jobs.build_features", ("validate_joined",), help="Spark batch features of ds", spark=True),
    Stage("materialize", "jobs.materialize", ("build_features",), help="Feast apply + materialize ds"),
    Stage("training_set", "jobs.training_set", ("materialize",), help="point-in-time training splits from Feast"),
    Stage("train", "jobs.train", ("training_set",), help="DeepFM (and baseline) with horovodrun"),
    Stage("calibrate", "jobs.calibrate", ("train",), help="downsampling correction + isotonic/Platt"),
    Stage("evaluate", "jobs.evaluate", ("calibrate",), help="holdout metrics, oracle, champion comparison"),
    Stage("train_retrieval", "jobs.train_retrieval", ("training_set",), help="two-tower model and FAISS index"),
    Stage("register", "jobs.register", ("evaluate", "train_retrieval"), help="MLflow run, model version, alias"),
    Stage("publish", "jobs.publish", ("register",), help="serving bundle and atomic CURRENT flip", asset=BUNDLE),
)
# The hourly refresh of the live ranker (jobs.train_hourly): no data gates, features or retrieval of its own.
HOURLY_STAGES: tuple[Stage, ...] = (
    Stage(
        "wait_for_logs",
        "jobs.wait_for_logs",
        help="wait until every raw hour that the hour needs is complete (its clicks arrive until its window ends)",
        sensor=True,
    ),
    Stage("join_logs", "jobs.join_logs", ("wait_for_logs",), help="Spark join of the hour", spark=True),
    Stage("training_set", "jobs.training_set", ("join_logs",), help="point-in-time splits of the newest hours"),
    Stage("train_hourly", "jobs.train_hourly", ("training_set",), help="the live ranker trained on (horovodrun)"),
    Stage("calibrate", "jobs.calibrate", ("train_hourly",), help="calibrator refitted on the hour before"),
    Stage("evaluate", "jobs.evaluate", ("calibrate",), help="holdout hour metrics and the daily run's gate"),
    Stage("register", "jobs.register", ("evaluate",), help="MLflow run and version (cadence=hourly), alias"),
    Stage("publish", "jobs.publish", ("register",), help="serving bundle and atomic CURRENT flip", asset=BUNDLE),
)
# pctr_monitor's: run per hour, on the served traffic of the hours before its end
MONITOR_STAGES: tuple[Stage, ...] = (
    Stage(
        "monitor",
        "jobs.monitor",
        help="drift of the served features, calibration of the served pCTRs, staleness; fails on a crossed threshold",
    ),
)
STAGES_BY_NAME = {s.name: s for s in (*HOURLY_STAGES, *DAILY_STAGES, *MONITOR_STAGES)}  # a shared stage: the daily one


def run_stage(cfg: PctrConfig, name: str, ds: str, keep_spark: bool = False) -> Stats:
    """Run one stage of ds (an hour for a monitor stage) and return its summary (also written as ``_stats.json``).

    A Spark session the stage opened is stopped, JVM included, when it returns (unless ``keep_spark``,
    for a next stage in this process that uses Spark too): the local runner and an Airflow task
    process would otherwise hold a JVM's heap through every later stage, training included.
    """
    from core.spark import stop_spark

    stage = STAGES_BY_NAME[name]
    module = importlib.import_module(stage.module)
    try:
        return module.run(cfg, ds, **stage.kwargs)
    finally:
        if not keep_spark:
            stop_spark()


def run_stage_task(name: str, ds: str) -> Stats:
    """Airflow's callable: read the configuration in the task process, then run the stage."""
    from core.config import load_config

    return run_stage(load_config(), name, ds)


def poke_stage_task(name: str, ds: str) -> bool:
    """Airflow's sensor callable: read the configuration in the task process, then check the stage's condition.

    It runs at every poke: only the stage's own module is imported (``jobs.wait_for_logs`` imports no engine).
    """
    from core.config import load_config

    return importlib.import_module(STAGES_BY_NAME[name].module).poke(load_config(), ds)
