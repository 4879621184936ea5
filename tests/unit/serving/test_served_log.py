import datetime as dt
import json
import os

import pytest

from core.raw_logs import IMPRESSION_KEYS, IMPRESSION_RECORD_KEYS
from serving.served_log import ServedLog, served_record


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


def test_a_record_has_the_raw_schema_fields_in_order_then_serving_fields_then_features():
    fields = {key: f"v-{key}" for key in reversed(IMPRESSION_KEYS)}
    record = served_record(fields, {"hour": 3}, price=0.5, explore=False)
    assert list(record) == [*IMPRESSION_KEYS, "price", "explore", "served_features"]
    assert [record[k] for k in IMPRESSION_KEYS] == [f"v-{k}" for k in IMPRESSION_KEYS]
    assert record["served_features"] == {"hour": 3}
    assert {k for k in record if k in IMPRESSION_RECORD_KEYS} == set(IMPRESSION_RECORD_KEYS)


def test_a_record_lacking_a_schema_field_is_refused():
    fields = {key: "v" for key in IMPRESSION_KEYS if key != "campaign_id"}
    with pytest.raises(KeyError, match="campaign_id"):
        served_record(fields, {})
