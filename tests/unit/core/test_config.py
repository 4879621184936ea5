from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import load_config


def test_defaults_put_state_under_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PCTR_HOME", raising=False)
    cfg = load_config()
    assert cfg.home == (Path.cwd() / "var").resolve()
    assert cfg.train.num_proc == 2
    assert cfg.features.online_store == "sqlite"


def test_env_overrides_nested_fields_and_home_becomes_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCTR_HOME", "relative/home")
    monkeypatch.setenv("PCTR_TRAIN__EPOCHS", "7")
    monkeypatch.setenv("PCTR_SPARK__MASTER", "spark://example:7077")
    cfg = load_config()
    assert cfg.home.is_absolute() and cfg.home.name == "home"
    assert cfg.train.epochs == 7
    assert cfg.spark.master == "spark://example:7077"


def test_file_is_below_env_and_above_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "pctr.toml"
    config.write_text("[train]\nepochs = 5\nbatch_size = 64\n[join]\nneg_rate = 0.25\n")
    monkeypatch.setenv("PCTR_CONFIG", str(config))
    monkeypatch.setenv("PCTR_TRAIN__EPOCHS", "9")
    cfg = load_config()
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.join.neg_rate) == (9, 64, 0.25)


def test_invalid_values_are_rejected_with_the_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCTR_JOIN__NEG_RATE", "1.5")
    with pytest.raises(ValidationError, match="neg_rate"):
        load_config()


def test_missing_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCTR_CONFIG", "/nonexistent/pctr.toml")
    with pytest.raises(FileNotFoundError, match="PCTR_CONFIG"):
        load_config()


def test_config_round_trips_through_json_for_worker_processes(tmp_path: Path) -> None:
    from core.config import PctrConfig

    cfg = load_config(home=tmp_path)
    assert PctrConfig.model_validate_json(cfg.model_dump_json()) == cfg
