import numpy as np
import pandas as pd
import pytest

from bench import quality
from core.config import load_config


def test_the_simulated_log_is_a_time_ordered_sample_with_the_true_click_probabilities(tmp_path) -> None:
    cfg = load_config(home=tmp_path)
    labels, p_click = quality.simulated_log(cfg, 5_000, tmp_path / "log.csv", scale="tiny")
    frame = pd.read_csv(tmp_path / "log.csv")
    np.testing.assert_array_equal(frame["click"], labels)
    assert list(frame.columns) == ["click", *quality.SIMULATED_COLUMNS]
    assert len(frame) == len(p_click) == 5_000
    assert frame["hour"].is_monotonic_increasing and frame["hour"].nunique() == 24
    assert ((0 < p_click) & (p_click < 1)).all()
    # the labels were drawn from these probabilities: clicks match their sum within sampling noise
    assert abs(frame["click"].sum() - p_click.sum()) < 4 * np.sqrt(p_click.sum())
    with pytest.raises(ValueError, match="fewer than"):
        quality.simulated_log(cfg, 10**6, tmp_path / "too-many.csv", scale="tiny")
