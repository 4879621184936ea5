"""bench.run's plumbing: a step in a process of its own under the bench's configuration, and the run's provenance."""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil
import pytest

from bench.run import config_env, measure_cli, run_info
from core.config import load_config


def test_config_env_gives_another_process_the_same_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(home=tmp_path)
    cfg.train.num_proc = 1
    cfg.train.hidden_units = (8, 4)
    cfg.spark.conf = {"spark.ui.enabled": "false"}
    for key in [k for k in os.environ if k.startswith("PCTR_")]:
        monkeypatch.delenv(key)
    for key, value in config_env(cfg).items():
        monkeypatch.setenv(key, value)
    assert load_config() == cfg


def test_measure_cli_runs_a_command_under_the_configuration_and_measures_its_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PCTR_TRAIN__NUM_PROC", "5")  # the caller's variables must not win over cfg
    cfg = load_config(home=tmp_path)
    cfg.train.num_proc = 3
    measured = measure_cli(cfg, "config")
    assert measured["stats"]["train"]["num_proc"] == 3
    assert measured["stats"]["home"] == str(tmp_path.resolve())
    assert 20 < measured["peak_rss_mib"] < psutil.virtual_memory().total / 2**20  # a Python process, at least
    assert measured["seconds"] > 0


def test_measure_cli_raises_when_the_command_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="pctr simulate --start 2026-11-03 --days 0 exited 1"):
        measure_cli(load_config(home=tmp_path), "simulate", "--start", "2026-11-03", "--days", "0")


def test_run_info_records_machine_commit_and_date() -> None:
    info = run_info()
    assert info["machine"]["cpus"] >= 1
    assert info["machine"]["memory_mib"] == round(psutil.virtual_memory().total / 2**20)
    assert re.fullmatch(r"3\.\d+\.\d+", info["machine"]["python"])
    assert re.fullmatch(r"[0-9a-f]{40}", info["git"]["commit"])
    assert isinstance(info["git"]["dirty"], bool)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["date"])
