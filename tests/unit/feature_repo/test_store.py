from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from core.layout import Layout
from feature_repo.store import OLD_FEATURE_FILE, feature_store


def test_feature_days_of_the_older_layout_are_refused_with_the_command_that_rebuilds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their files are outside the sources' glob: Feast would train without them and say nothing."""
    monkeypatch.setenv("PCTR_HOME", str(tmp_path))
    cfg = load_config()
    old_day = Layout(cfg.home).features("user", "2026-11-02")
    old_day.mkdir(parents=True)
    (old_day / OLD_FEATURE_FILE).write_bytes(b"")
    with pytest.raises(RuntimeError, match=r"\['2026-11-02'\].*pctr build-features --ds DS"):
        feature_store(cfg, apply=True)
    assert (old_day / OLD_FEATURE_FILE).exists()  # nothing is moved nor removed
