from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from entrypoints.local_runner import run_day


def test_unknown_stage_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        run_day(load_config(home=tmp_path), "2026-11-01", until="no_such_stage")
