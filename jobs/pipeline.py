"""The daily pipeline as an ordered list of stages: one definition for the CLI, the local runner and the DAG;
and the monitor's stage, which runs per hour (``MONITOR_STAGES``: its ``ds`` is an hour, ``YYYY-MM-DDTHH``).

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

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")


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
        "join_logs", "jobs.join_logs", ("validate_raw",), help="Spark join, quarantine, label, downsample", spark=True
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
    Stage("publish", "jobs.publish", ("register",), help="serving bundle and atomic CURRENT flip"),
)
STAGES_BY_NAME = {s.name: s for s in DAILY_STAGES}
# pctr_monitor's: run per hour, on the served traffic of the hours before its end
MONITOR_STAGES: tuple[Stage, ...] = (
    Stage(
        "monitor",
        "jobs.monitor",
        help="drift of the served features, calibration of the served pCTRs, staleness; fails on a crossed threshold",
    ),
)
_ANY_STAGE = STAGES_BY_NAME | {s.name: s for s in MONITOR_STAGES}


def run_stage(cfg: PctrConfig, name: str, ds: str, keep_spark: bool = False) -> Stats:
    """Run one stage of ds (an hour for a monitor stage) and return its summary (also written as ``_stats.json``).

    A Spark session the stage opened is stopped, JVM included, when it returns (unless ``keep_spark``,
    for a next stage in this process that uses Spark too): the local runner and an Airflow task
    process would otherwise hold a JVM's heap through every later stage, training included.
    """
    from core.spark import stop_spark

    stage = _ANY_STAGE[name]
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
