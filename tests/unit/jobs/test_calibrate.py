"""The calibration stage refuses a split it cannot fit on, with the reason."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.config import load_config
from core.layout import Layout
from jobs import calibrate
from jobs.training_set import write_split
from models.features import MODEL_FEATURES


def test_a_calibration_split_without_a_click_is_refused_with_its_counts(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    hour = "2026-11-07T05"
    rows = pd.DataFrame({"label": 0, **{f.name: f.default for f in MODEL_FEATURES}}, index=range(101))
    write_split(rows, Layout(cfg.home).training_set(hour) / "calibration", None)
    with pytest.raises(ValueError, match=r"calibration split of 2026-11-07T05 has 101 rows and 0 clicks"):
        calibrate.run(cfg, hour)
