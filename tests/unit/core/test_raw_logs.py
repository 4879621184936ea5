"""Raw hours, their completion markers and the check that raw files read through (no Spark)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from core.config import load_config
from core.layout import Layout
from core.raw_logs import (
    COMPLETE_MARKER,
    IncompleteLogsError,
    RawHour,
    UnreadableRawFileError,
    copy_unreadable,
    data_files,
    readable_files,
    require_complete,
    scan_files,
)

DS = "2026-03-02"
LINES = [f'{{"impression_id": "i{i}", "pad": "{"x" * 200}"}}' for i in range(5000)]


def _write(layout: Layout, hour: int, name: str, data: bytes) -> Path:
    path = RawHour("impressions", DS, hour).path(layout) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_an_hour_prints_as_the_partition_it_names_and_is_complete_only_with_its_marker(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    hour = RawHour("clicks", "2026-03-03", 5)
    assert str(hour) == "clicks dt=2026-03-03/hour=05"
    assert hour.path(layout) == layout.raw_hour("clicks", "2026-03-03", 5)
    hour.path(layout).mkdir(parents=True)
    (hour.path(layout) / "part-from-2026-03-02.json.gz").write_bytes(gzip.compress(b"{}\n"))
    (hour.path(layout) / ".part-from-2026-03-03.json.gz.x1.tmp").write_bytes(b"being written")
    assert not hour.is_complete(layout)
    with pytest.raises(IncompleteLogsError, match=r"^day: clicks dt=2026-03-03/hour=05 not complete; .* Re-simulate"):
        require_complete(layout, [hour], "day")
    (hour.path(layout) / COMPLETE_MARKER).touch()
    assert hour.is_complete(layout)
    require_complete(layout, [hour], "day")
    # what Spark would read: neither the marker nor a writer's hidden temporary file
    assert [p.name for p in data_files(hour.path(layout))] == ["part-from-2026-03-02.json.gz"]


def test_every_raw_file_is_read_through_and_a_torn_or_corrupt_one_is_named_with_its_cause(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    whole = gzip.compress(("\n".join(LINES) + "\n").encode())
    good = _write(layout, 0, "part-0.json.gz", whole)
    torn = _write(layout, 1, "part-0.json.gz", whole[: len(whole) // 2])
    garbage = _write(layout, 2, "part-0.json.gz", b"not a gzip stream at all")
    plain = _write(layout, 3, "part-0.json", b"{}\n{}\n")
    hours = [RawHour("impressions", DS, h) for h in range(4)]

    scanned = {f.path: f for f in scan_files(layout, hours)}
    assert list(scanned) == [good, torn, garbage, plain]  # in hour order
    assert (scanned[good].lines, scanned[good].error) == (len(LINES), None)
    assert (scanned[plain].lines, scanned[plain].error) == (2, None)
    assert scanned[torn].error == "EOFError: Compressed file ended before the end-of-stream marker was reached"
    assert 0 < scanned[torn].lines < len(LINES) and scanned[torn].size_bytes == len(whole) // 2
    assert scanned[garbage].error.startswith("BadGzipFile: Not a gzipped file")
    assert scanned[garbage].lines == 0

    cfg = load_config(home=tmp_path)
    with pytest.raises(UnreadableRawFileError) as err:
        readable_files(cfg, hours)
    assert str(err.value) == (
        f"{torn} (impressions dt={DS}/hour=01) cannot be read: EOFError: Compressed file ended before the "
        'end-of-stream marker was reached (+1 more unreadable); join.unreadable_files = "quarantine" proceeds '
        "without it"
    )
    cfg.join.unreadable_files = "quarantine"
    readable, unreadable = readable_files(cfg, hours)
    assert [f.path for f in readable] == [good, plain] and [f.path for f in unreadable] == [torn, garbage]


def test_an_unreadable_file_is_copied_with_its_reason_and_never_moved(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "home")
    torn = _write(layout, 1, "part-0.json.gz", gzip.compress(b"{}\n" * 1000)[:30])
    [scanned] = scan_files(layout, [RawHour("impressions", DS, 1)])
    copy = copy_unreadable(scanned, layout, tmp_path / "quarantine")
    assert copy == tmp_path / "quarantine" / "impressions" / f"dt={DS}" / "hour=01" / "part-0.json.gz"
    assert copy.read_bytes() == torn.read_bytes() and torn.exists()
    assert copy.with_name("part-0.json.gz.reason").read_text() == f"impressions dt={DS}/hour=01: {scanned.error}\n"
