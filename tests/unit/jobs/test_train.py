"""When the daily run searches its hyperparameters, and what it trains with in between."""

from pathlib import Path

import pytest

from core.config import load_config
from jobs.train import run_config, search_due

RECORD = {"searched_on": "2026-11-06", "learning_rate": 0.003, "embedding_weight_decay": 0.03, "baseline_c": 0.1}


@pytest.mark.parametrize(
    ("ds", "every", "due"),
    [
        ("2026-11-07", 7, False),
        ("2026-11-12", 7, False),
        ("2026-11-13", 7, True),  # a week after the last search
        ("2026-11-06", 7, True),  # a rerun of the search's own day searches again, as its first run did
        ("2026-10-20", 7, False),  # a backfill trains with the setting in force
        ("2026-12-31", 0, False),  # searches switched off
    ],
)
def test_a_search_is_due_every_search_every_days(tmp_path: Path, ds: str, every: int, due: bool) -> None:
    cfg = load_config(home=tmp_path, train={"search_every_days": every})
    assert search_due(cfg, ds, RECORD) is due


def test_the_first_run_searches_unless_searches_are_off(tmp_path: Path) -> None:
    assert search_due(load_config(home=tmp_path), "2026-11-06", None)
    assert not search_due(load_config(home=tmp_path, train={"search_every_days": 0}), "2026-11-06", None)


def test_between_searches_the_run_trains_with_the_recorded_setting_and_the_baseline_with_its_c(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    between = run_config(cfg, RECORD, searching=False).train
    assert (between.learning_rate, between.embedding_weight_decay) == (0.003, 0.03)
    assert between.baseline_c_values == (0.1,)
    assert run_config(cfg, RECORD, searching=True) == cfg
    assert run_config(cfg, None, searching=False) == cfg
