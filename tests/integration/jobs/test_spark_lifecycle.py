"""A stage's Spark JVM lives as long as the stage: nothing keeps a JVM's heap through later stages."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from core.config import load_config
from jobs.pipeline import run_stage
from simulator import logs

pytestmark = pytest.mark.integration

DAY = "2026-11-10"


def _java_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "java" in p.name()]


def test_a_spark_stage_run_as_a_stage_leaves_no_jvm_behind(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    logs.run(cfg, start=DAY, days=2, scale="tiny")
    run_stage(cfg, "validate_raw", DAY, keep_spark=True)
    assert _java_children(), "the session was to be kept for a next Spark stage"
    run_stage(cfg, "join_logs", DAY)
    assert _java_children() == []
