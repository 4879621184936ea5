from __future__ import annotations

from pathlib import Path

import pytest

from core.io import read_json, staged_dir, write_json_atomic


def test_staged_dir_replaces_the_partition_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "dt=2026-11-01"
    with staged_dir(final) as scratch:
        (scratch / "a").write_text("first")
    assert (final / "a").read_text() == "first"

    with pytest.raises(RuntimeError), staged_dir(final) as scratch:
        (scratch / "a").write_text("half-written")
        raise RuntimeError("stage failed")
    assert (final / "a").read_text() == "first"

    with staged_dir(final) as scratch:
        (scratch / "b").write_text("second")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["dt=2026-11-01"]


def test_a_crash_between_renames_is_repaired_on_the_next_run(tmp_path: Path) -> None:
    final = tmp_path / "part"
    orphan = tmp_path / ".part.old-deadbeef"
    orphan.mkdir()
    (orphan / "x").write_text("old")
    with staged_dir(final):
        assert (final / "x").read_text() == "old"
    assert not orphan.exists()


def test_json_written_atomically_reads_back(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "s" / "_stats.json", {"b": 1, "a": [1, 2]})
    assert read_json(tmp_path / "s" / "_stats.json") == {"a": [1, 2], "b": 1}
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["_stats.json"]
