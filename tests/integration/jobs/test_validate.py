"""The Great Expectations gate on tiny hand-made raw and joined days (real Spark, real GX file context)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from core.config import PctrConfig, load_config
from core.io import read_json
from core.layout import Layout, day_bounds
from core.raw_logs import COMPLETE_MARKER, IncompleteLogsError, UnreadableRawFileError, day_hours
from jobs.join_logs import OUTPUT_COLUMNS
from jobs.validate import DataQualityError, report_dir, run
from models.features import EXPOSURES_FEATURE

pytestmark = pytest.mark.integration

DAY1, DAY2, DAY3 = "2026-11-20", "2026-11-21", "2026-11-22"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> PctrConfig:
    # one home for the module: days build on each other's history, and one GX context is reused
    return load_config(home=tmp_path_factory.mktemp("home"))


def _impression(ds: str, i: int) -> dict[str, object]:
    ts = day_bounds(ds)[0] + dt.timedelta(seconds=37 * i)
    return {
        "impression_id": f"{ds}-{i}", "request_id": f"r{i}", "ts": ts.isoformat().replace("+00:00", "Z"),
        "user_id": f"u{i % 50}", "ad_id": f"a{i % 30}", "advertiser_id": f"adv{i % 5}", "campaign_id": "c1",
        "placement": "feed", "position": 1 + i % 10, "device": "mobile", "os": "ios", "country": "US",
        "bid": 0.5 + i % 7, "model_version": "v0", "pctr_served": 0.01,
    }  # fmt: skip


def write_raw(
    cfg: PctrConfig, ds: str, n: int = 300, malformed: float = 0.0, bad_bids: float = 0.0, no_user: float = 0.0
) -> None:
    """n impression lines over two hours; the first ones malformed, the last ones with out-of-range bids,
    and those from the middle on without a user."""
    lines = []
    for i in range(n):
        record = _impression(ds, i)
        if i < malformed * n:
            lines.append('{"impression_id": "broken", "ts": ')
            continue
        if i >= n - bad_bids * n:
            record["bid"] = 500.0
        if n // 2 <= i < n // 2 + no_user * n:
            del record["user_id"]
        lines.append(json.dumps(record))
    for hour, chunk in enumerate((lines[: n // 2], lines[n // 2 :])):
        path = Layout(cfg.home).raw_hour("impressions", ds, hour) / "part-0.json.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt") as handle:
            handle.write("\n".join(chunk) + "\n")
    for hour in day_hours("impressions", ds):  # the other 22 hours had no traffic
        hour.path(Layout(cfg.home)).mkdir(parents=True, exist_ok=True)
        (hour.path(Layout(cfg.home)) / COMPLETE_MARKER).touch()


def write_joined(cfg: PctrConfig, ds: str, corrupt: str | None = None) -> None:
    """A consistent day: 2000 clean impressions at CTR 5%, all positives and every 10th negative joined,
    and every 7th impression in the eval sample."""
    w = cfg.join.neg_rate
    rows = []
    for i in range(2000):
        record = _impression(ds, i)
        ts = pd.Timestamp(record["ts"])
        label = int(i % 20 == 3)
        rows.append({**record, "ts": ts, "hour": ts.hour, "label": label, "click_ts": ts if label else pd.NaT})
    full = pd.DataFrame(rows).drop(columns=["model_version", "pctr_served"])
    full["ts"] = full["ts"].astype("datetime64[us, UTC]")
    full["click_ts"] = pd.to_datetime(full["click_ts"], utc=True).astype("datetime64[us, UTC]")
    full["position"] = full["position"].astype("int32")
    full["label"] = full["label"].astype("int32")
    full[EXPOSURES_FEATURE] = full.sort_values("ts").groupby(["user_id", "ad_id"]).cumcount()
    negatives_kept = (full["label"] == 0) & (full.index % round(1 / w) == 1)
    joined = full[(full["label"] == 1) | negatives_kept].assign(neg_rate=w)
    joined["weight"] = joined["label"].map({1: 1.0, 0: 1.0 / w})
    joined = joined[list(OUTPUT_COLUMNS)].reset_index(drop=True)
    if corrupt == "duplicate":
        joined.loc[1, "impression_id"] = joined.loc[0, "impression_id"]
    elif corrupt == "label":
        joined.loc[3, "label"] = 2
    elif corrupt == "neg_rate":
        joined["neg_rate"] = 0.2
    layout = Layout(cfg.home)
    for base, df in ((layout.joined(ds), joined), (layout.eval_sample(ds), full[full.index % 7 == 0])):
        (base / "data").mkdir(parents=True, exist_ok=True)
        df.to_parquet(base / "data" / "part-0.parquet", index=False)


def test_clean_raw_days_pass_and_build_history(cfg: PctrConfig) -> None:
    write_raw(cfg, DAY1)
    first = run(cfg, DAY1, "raw")
    assert first["success"] and first["failed"] == [] and first["lines"] == 300
    assert first["row_count_check"].startswith("skipped")
    assert Path(first["data_docs"]).name == "index.html" and Path(first["data_docs"]).is_file()
    assert read_json(report_dir(Layout(cfg.home), "raw", DAY1) / "_stats.json") == first

    assert run(cfg, DAY1, "raw")["success"]  # a rerun replaces the suite, definition and checkpoint

    write_raw(cfg, DAY2, n=320)
    second = run(cfg, DAY2, "raw")
    assert second["success"] and second["row_count_check"] == "checked"
    assert second["trailing_days_used"] == [DAY1] and second["expectations"] == first["expectations"] + 1


def test_corrupted_raw_day_fails_with_one_line_naming_the_checks(cfg: PctrConfig) -> None:
    write_raw(cfg, DAY3, malformed=0.2, bad_bids=0.12, no_user=0.1)
    with pytest.raises(DataQualityError) as err:
        run(cfg, DAY3, "raw")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"validate raw ds={DAY3} failed: lines parse: 20.0% unexpected (allowed 5.0%)")
    stats = read_json(report_dir(Layout(cfg.home), "raw", DAY3) / "_stats.json")
    assert not stats["success"]
    # shares of the parsed lines: 36 bad bids and 30 lines without user among 240
    assert stats["failed"][1:] == [
        "user_id not null in parsed lines: 12.5% unexpected (allowed 5.0%)",
        "bid in (0, 100]: 15.0% unexpected (allowed 5.0%)",
    ]
    assert message.endswith("(+2 more); report: " + str(report_dir(Layout(cfg.home), "raw", DAY3) / "_stats.json"))


def test_the_raw_gate_reads_a_day_only_once_its_impression_hours_are_complete(cfg: PctrConfig) -> None:
    day = "2026-11-23"
    write_raw(cfg, day)
    (Layout(cfg.home).raw_hour("impressions", day, 13) / COMPLETE_MARKER).unlink()
    with pytest.raises(IncompleteLogsError) as err:
        run(cfg, day, "raw")
    assert str(err.value) == f"validate raw ds={day}: impressions dt={day}/hour=13 not complete"


def test_an_unreadable_raw_file_fails_the_gate_in_one_line_unless_quarantined(cfg: PctrConfig) -> None:
    day = "2026-12-24"  # no history: with half its lines left out, the day would fail the row-count check
    write_raw(cfg, day)
    torn = Layout(cfg.home).raw_hour("impressions", day, 1) / "part-0.json.gz"
    torn.write_bytes(torn.read_bytes()[:-20])  # the end of the stream (and its checksum) lost in transfer
    with pytest.raises(UnreadableRawFileError) as err:
        run(cfg, day, "raw")
    assert str(err.value) == (
        f"{torn} (impressions dt={day}/hour=01) cannot be read: EOFError: Compressed file ended before the "
        'end-of-stream marker was reached; join.unreadable_files = "quarantine" proceeds without it'
    )

    quarantine = cfg.model_copy(deep=True)
    quarantine.join.unreadable_files = "quarantine"
    stats = run(quarantine, day, "raw")
    assert stats["success"] and stats["lines"] == 150  # hour 00's lines; hour 01 is left out
    [unreadable] = stats["unreadable_files"]
    assert unreadable["file"] == str(torn) and unreadable["hour"] == f"impressions dt={day}/hour=01"
    assert unreadable["bytes"] == torn.stat().st_size and unreadable["cause"].startswith("EOFError: ")


def test_clean_joined_day_passes(cfg: PctrConfig) -> None:
    write_joined(cfg, DAY1)
    stats = run(cfg, DAY1, "joined")
    assert stats["success"] and stats["eval_ctr"] == pytest.approx(0.05, abs=0.005)
    lo, hi = stats["positive_share_band"]
    assert lo < stats["expected_positive_share"] < hi and lo < stats["positive_share"] < hi
    assert Path(stats["data_docs"]).is_file()


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [("duplicate", "impression_id unique"), ("label", "label in {0, 1}"), ("neg_rate", "neg_rate equals 0.1")],
)
def test_corrupted_joined_day_fails(cfg: PctrConfig, corrupt: str, reason: str) -> None:
    write_joined(cfg, DAY2, corrupt=corrupt)
    with pytest.raises(DataQualityError, match=f"^validate joined ds={DAY2} failed: {re.escape(reason)}: "):
        run(cfg, DAY2, "joined")
