"""The simulated traffic of a day: click delays (the rest is checked through the logs written, test_logs.py)."""

from __future__ import annotations

import numpy as np

from simulator import traffic


def test_click_delays_have_the_configured_late_share() -> None:
    delays = traffic.click_delays_ms(np.random.default_rng(0), 200_000, window_hours=6)
    assert delays.min() >= 1000 and delays.max() <= 48 * 3_600_000 + 1000
    assert 60_000 < np.median(delays) < 600_000
    assert 0.035 < (delays > 6 * 3_600_000).mean() < 0.045
