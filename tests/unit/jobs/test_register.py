"""Which registered version may become champion: the gate's verdict and the order of daily runs and hourly refreshes."""

from __future__ import annotations

import pytest

from core.champion import Champion
from jobs.register import promotion

PASSED = {"promote": True, "gate_reason": "auc 0.75 vs baseline 0.74"}
DAILY = Champion("4", "2026-11-06", "2026-11-06")
REFRESH = Champion("5", "2026-11-07T03", "2026-11-06")


@pytest.mark.parametrize(
    ("live", "candidate", "promoted"),
    [
        (DAILY, Champion("5", "2026-11-07T03", "2026-11-06"), True),  # a refresh of the live daily model
        (REFRESH, Champion("6", "2026-11-07T04", "2026-11-06"), True),  # the next hour's refresh
        (REFRESH, Champion("6", "2026-11-07", "2026-11-07"), True),  # the next day's run, after refreshes
        (REFRESH, Champion("6", "2026-11-07T02", "2026-11-06"), False),  # an earlier hour, backfilled
        (REFRESH, Champion("6", "2026-11-06", "2026-11-06"), False),  # a rerun of the day the refresh went on from
        (Champion("6", "2026-11-07", "2026-11-07"), Champion("7", "2026-11-07T09", "2026-11-06"), False),
        (None, DAILY, True),
    ],
)
def test_a_version_goes_live_unless_a_newer_one_is(live: Champion | None, candidate: Champion, promoted: bool) -> None:
    decision, reason = promotion(PASSED, live, candidate)
    assert decision is promoted
    assert reason.startswith("promoted" if promoted else "registered only")


def test_the_gate_refuses_before_any_order_is_considered() -> None:
    decision, reason = promotion({"promote": False, "gate_reason": "ECE too high"}, None, DAILY)
    assert not decision and reason == "refused by the gate: ECE too high"
