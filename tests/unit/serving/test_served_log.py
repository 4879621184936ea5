import datetime as dt
import json
import os

import numpy as np
import pytest

from core.raw_logs import IMPRESSION_KEYS, IMPRESSION_RECORD_KEYS
from models.features import FEATURES
from serving.auction import Placement
from serving.served_log import ServedLog, impression_records, served_record


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


def test_impression_records_carry_the_placements_and_the_features_they_were_scored_on():
    names = [f.name for f in FEATURES]
    # three candidates, every spec feature a column; numpy scalars must come out as JSON-able Python values
    columns = {f.name: np.full(3, f.default, dtype=f.numpy_dtype) for f in FEATURES}
    columns |= {
        "user_id": np.array(["u1"] * 3, dtype=object),
        "ad_id": np.array(["a0", "a1", "a2"], dtype=object),
        "advertiser_id": np.array(["x", "y", "z"], dtype=object),
        "device": np.array(["ios"] * 3, dtype=object),
        "hour": np.full(3, 19, dtype=np.int64),
        "ad_ctr_7d": np.array([0.1, 0.2, 0.3], dtype=np.float32),
    }
    placements = [Placement(2, 1, 0.4), Placement(0, 2, 0.05, explore=True)]
    records = impression_records(
        request_id="r1", now=dt.datetime(2026, 11, 7, 19, 30, 0, 123456, tzinfo=dt.UTC), columns=columns,
        pctr=np.array([0.01, 0.02, 0.03]), placements=placements,
        campaign_ids=np.array(["c0", "c1", "c2"], dtype=object), bids=np.array([1.0, 2.0, 3.0]), model_version="7",
        bundle_version="v1",
    )  # fmt: skip
    first, second = records
    assert first["impression_id"] != second["impression_id"]
    assert {k: v for k, v in first.items() if k not in ("impression_id", "served_features")} == {
        "request_id": "r1", "ts": "2026-11-07T19:30:00.123Z", "user_id": "u1", "ad_id": "a2", "advertiser_id": "z",
        "campaign_id": "c2", "placement": "feed", "device": "ios", "os": "unknown", "country": "unknown",
        "position": 1, "bid": 3.0, "price": 0.4, "explore": False, "model_version": "7", "bundle_version": "v1",
        "pctr_served": 0.03,
    }  # fmt: skip
    assert (second["ad_id"], second["position"], second["explore"], second["price"]) == ("a0", 2, True, 0.05)
    assert list(first["served_features"]) == names
    assert first["served_features"]["ad_ctr_7d"] == pytest.approx(0.3)
    assert first["served_features"]["position"] == 1  # the slot the model scored at, not the slot served
    json.dumps(records)  # plain JSON: no numpy scalars left
    assert all(type(v) in (str, int, float) for v in first["served_features"].values())


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
