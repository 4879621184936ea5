import datetime as dt
import json
import os

from serving.served_log import ServedLog


def test_records_append_as_json_lines_per_day_and_process(tmp_path):
    log = ServedLog(tmp_path / "served")
    day = dt.date(2026, 11, 20)
    log.write([{"impression_id": "i1", "served_features": {"hour": 3}}], day)
    log.write([{"impression_id": "i2"}, {"impression_id": "i3"}], day)
    log.write([], day + dt.timedelta(days=1))

    path = tmp_path / "served" / "dt=2026-11-20" / f"{os.getpid()}.jsonl"
    assert log.path(day) == path
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["impression_id"] for r in lines] == ["i1", "i2", "i3"]
    assert lines[0]["served_features"] == {"hour": 3}
    assert not (tmp_path / "served" / "dt=2026-11-21").exists()
