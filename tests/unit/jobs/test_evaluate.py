from __future__ import annotations

from pathlib import Path

from core.config import load_config
from jobs.evaluate import gate


def test_gate_promotes_only_a_calibrated_candidate_not_worse_than_the_champion(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    good = {"auc": 0.74, "ece": 0.003}
    assert gate(cfg, good, None) == (True, "no champion yet")
    assert gate(cfg, {**good, "ece": 0.5}, None)[0] is False
    assert gate(cfg, good, {"version": "3", "auc": 0.741})[0] is True
    promote, reason = gate(cfg, good, {"version": "3", "auc": 0.76})
    assert promote is False and "below champion 3" in reason
