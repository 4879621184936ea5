"""The Spark log join on a tiny simulated day with every kind of fault."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pandas as pd
import pytest

from core.config import PctrConfig, load_config
from core.layout import Layout
from core.raw_logs import COMPLETE_MARKER, IncompleteLogsError, RawHour
from entrypoints.cli import main
from jobs import join_logs, validate
from models.features import EXPOSURES_FEATURE
from simulator import logs

pytestmark = pytest.mark.integration
DS, NEXT = "2026-11-02", "2026-11-03"


def _raw_digest(layout: Layout) -> str:
    digest = hashlib.sha256()
    for path in sorted((layout.home / "data" / "raw").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> tuple[PctrConfig, dict, dict, str, str]:
    cfg = load_config(home=tmp_path_factory.mktemp("join"))
    # and the next day through hour 05: the end of DS's attribution window
    sim = logs.run(cfg, start="2026-11-01", days=3, scale="tiny", faults=0.02, until_hour=5)
    layout = Layout(cfg.home)
    before = _raw_digest(layout)
    first = join_logs.run(cfg, DS)
    second = join_logs.run(cfg, DS)
    return cfg, sim, first, second["checksum"], before


def test_every_record_is_accounted_for_exactly_once(joined) -> None:
    cfg, sim, stats, _, _ = joined
    quarantined = stats["quarantined"]
    imp_q = sum(v for k, v in quarantined.items() if k.startswith("impression:"))
    assert stats["input_impressions"] == stats["clean_impressions"] + imp_q
    assert stats["clean_impressions"] == stats["output_rows"] + stats["downsampled_negatives"]
    click_q = sum(v for k, v in quarantined.items() if k.startswith("click:"))
    assert stats["input_clicks"] == stats["clean_clicks"] + click_q
    assert stats["reconciled"] is True
    rows = pd.read_parquet(stats["output_path"])
    assert len(rows) == stats["output_rows"] and rows["impression_id"].is_unique
    labelled = pd.read_parquet(stats["labelled_path"])
    assert len(labelled) == stats["labelled_rows"] == stats["clean_impressions"]
    assert labelled["impression_id"].is_unique and set(rows["impression_id"]) <= set(labelled["impression_id"])
    quarantine = pd.read_parquet(Layout(cfg.home).quarantine(DS) / "data")
    assert len(quarantine) == imp_q + click_q


def test_each_fault_kind_is_quarantined_with_its_reason(joined) -> None:
    _, sim, stats, _, _ = joined
    day_faults = sim["per_day"][DS]["faults"]
    quarantined = stats["quarantined"]
    assert quarantined["impression:malformed"] == day_faults["malformed"]
    assert quarantined["impression:duplicate"] == day_faults["duplicate"]
    assert quarantined["impression:out_of_range"] == day_faults["out_of_range"]
    # orphan clicks are accounted on the day they arrive; a few of DS's land on DS+1
    assert 0.8 * day_faults["orphan_click"] <= quarantined["click:orphan_click"] <= day_faults["orphan_click"] * 1.2


def test_labels_equal_the_truth_for_every_clean_kept_row(joined) -> None:
    cfg, _, stats, _, _ = joined
    layout = Layout(cfg.home)
    truth = pd.read_parquet(layout.truth(DS))
    window = pd.Timedelta(hours=cfg.join.attribution_window_hours)
    truth["expected"] = (truth["click_ts"].notna() & (truth["click_ts"] - truth["ts"] <= window)).astype(int)
    clean_truth = truth[truth["fault"].isna()].set_index("impression_id")
    for path in (stats["output_path"], stats["eval_sample_path"], stats["labelled_path"]):
        rows = pd.read_parquet(path).set_index("impression_id")
        kept = rows.index.intersection(clean_truth.index)
        assert len(kept) > 0.9 * len(rows)
        assert (rows.loc[kept, "label"] == clean_truth.loc[kept, "expected"]).all()


def test_downsampling_keeps_every_positive_and_about_w_of_negatives(joined) -> None:
    cfg, _, stats, _, _ = joined
    rows = pd.read_parquet(stats["output_path"])
    eval_rows = pd.read_parquet(stats["eval_sample_path"])
    assert stats["positives"] == int(rows["label"].sum())
    negatives_kept = (rows["label"] == 0).sum()
    clean_negatives = stats["clean_impressions"] - stats["positives"]
    assert negatives_kept / clean_negatives == pytest.approx(cfg.join.neg_rate, abs=0.02)
    assert (rows["neg_rate"] == cfg.join.neg_rate).all()
    assert len(eval_rows) / stats["clean_impressions"] == pytest.approx(cfg.join.eval_sample_rate, abs=0.03)


def test_rows_count_the_users_earlier_impressions_of_the_ad_that_day(joined) -> None:
    _, _, stats, _, _ = joined
    clean = pd.read_parquet(stats["labelled_path"]).sort_values(["ts", "impression_id"])
    expected = clean.groupby(["user_id", "ad_id"]).cumcount().rename("expected")
    expected.index = clean["impression_id"]
    for path in (stats["output_path"], stats["eval_sample_path"]):
        rows = pd.read_parquet(path).set_index("impression_id").join(expected)
        assert (rows[EXPOSURES_FEATURE] == rows["expected"]).all()
        assert rows[EXPOSURES_FEATURE].max() > 0


def test_rerun_is_identical_and_raw_data_is_untouched(joined) -> None:
    cfg, _, stats, second_checksum, raw_before = joined
    assert stats["checksum"] == second_checksum
    assert _raw_digest(Layout(cfg.home)) == raw_before


def test_a_day_whose_last_click_hour_is_not_complete_cannot_be_closed(joined) -> None:
    cfg, *_ = joined
    marker = RawHour("clicks", NEXT, 5).path(Layout(cfg.home)) / COMPLETE_MARKER
    marker.unlink()
    try:
        with pytest.raises(IncompleteLogsError) as err:
            join_logs.run(cfg, DS)
    finally:
        marker.touch()
    assert str(err.value) == f"ds={DS} cannot be closed yet: clicks dt={NEXT}/hour=05 not complete"


HOUR = f"{DS}T13"


def test_an_hour_closes_with_the_rows_the_day_gives_it_and_its_own_accounting(joined) -> None:
    """pctr_hourly's join: the same code on one hour gives exactly the daily join's rows of that hour (labels,
    downsampling, the day's earlier exposures), and accounts for the hour's own records."""
    cfg, _, day_stats, _, _ = joined
    layout = Layout(cfg.home)
    stats = join_logs.run(cfg, HOUR)
    assert stats["reconciled"] is True and stats["ds"] == HOUR
    assert stats["output_path"] == str(layout.joined(HOUR) / "data") != day_stats["output_path"]
    for output in ("output_path", "eval_sample_path", "labelled_path"):
        hour_rows = pd.read_parquet(stats[output]).sort_values("impression_id", ignore_index=True)
        day_rows = pd.read_parquet(day_stats[output])
        in_hour = day_rows[day_rows["impression_id"].isin(hour_rows["impression_id"])]
        assert 0 < len(hour_rows) < len(day_rows)
        pd.testing.assert_frame_equal(hour_rows, in_hour.sort_values("impression_id", ignore_index=True))
    quarantined = {
        key: set(map(tuple, pd.read_parquet(layout.quarantine(key) / "data", columns=["reason", "raw"]).to_numpy()))
        for key in (DS, HOUR)
    }
    assert quarantined[HOUR] and quarantined[HOUR] <= quarantined[DS]  # each rejected for the day's reason
    # the day's clean impressions whose raw file is the hour's are exactly the hour's
    assert stats["clean_impressions"] == stats["labelled_rows"] == stats["output_rows"] + stats["downsampled_negatives"]
    assert join_logs.run(cfg, HOUR)["checksum"] == stats["checksum"]


TORN_HOUR = 7


@pytest.fixture(scope="module")
def torn(tmp_path_factory: pytest.TempPathFactory) -> tuple[PctrConfig, Path, int, int]:
    """A tiny day whose impressions of hour 07 lost the second half of their gzip stream in transfer.

    Returns the configuration, the torn file, the lines it held whole and the day's impression lines.
    """
    cfg = load_config(home=tmp_path_factory.mktemp("torn"))
    logs.run(cfg, start=DS, days=2, scale="tiny", until_hour=5)
    hours = sorted(Layout(cfg.home).raw("impressions", DS).glob("hour=*/part-0.json.gz"))
    day_lines = sum(gzip.decompress(p.read_bytes()).count(b"\n") for p in hours)
    path = Layout(cfg.home).raw_hour("impressions", DS, TORN_HOUR) / "part-0.json.gz"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return cfg, path, gzip.decompress(whole).count(b"\n"), day_lines


def test_a_torn_raw_file_stops_the_gate_and_the_join_with_one_line_naming_it(
    torn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, path, _, _ = torn
    monkeypatch.setenv("PCTR_HOME", str(cfg.home))
    expected = (
        f"UnreadableRawFileError: {path} (impressions dt={DS}/hour={TORN_HOUR:02d}) cannot be read: EOFError: "
        "Compressed file ended before the end-of-stream marker was reached; "
        'join.unreadable_files = "quarantine" proceeds without it'
    )
    for command in (["validate", "--stage", "raw"], ["join-logs"]):
        assert main([*command, "--ds", DS]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [f"pctr {command[0]}: {expected}"]
    assert not Layout(cfg.home).joined(DS).exists()


def test_in_quarantine_mode_a_torn_file_is_copied_aside_and_the_day_closes_without_it(torn) -> None:
    cfg, path, torn_lines, day_lines = torn
    torn_bytes = path.read_bytes()
    cfg = cfg.model_copy(deep=True)
    cfg.join.unreadable_files = "quarantine"
    gate = validate.run(cfg, DS, "raw")
    assert gate["success"] and gate["lines"] == day_lines - torn_lines
    assert [f["file"] for f in gate["unreadable_files"]] == [str(path)]

    stats = join_logs.run(cfg, DS)
    assert stats["reconciled"] is True
    [held] = stats["unreadable_files"]
    assert held["hour"] == f"impressions dt={DS}/hour={TORN_HOUR:02d}" and held["cause"].startswith("EOFError: ")
    assert held["bytes"] == len(torn_bytes)
    # the lines that decompressed before the tear: a lower bound of what the file held
    assert 0 < held["complete_lines_before_error"] < torn_lines
    assert stats["unreadable_lines"] == {"impressions": held["complete_lines_before_error"], "clicks": 0}
    # every other line of the day is accounted: kept, downsampled or quarantined
    quarantined = sum(v for k, v in stats["quarantined"].items() if k.startswith("impression:"))
    assert stats["input_impressions"] == day_lines - torn_lines
    assert stats["input_impressions"] == stats["output_rows"] + stats["downsampled_negatives"] + quarantined
    assert stats["input_impressions"] + stats["unreadable_lines"]["impressions"] < day_lines

    copy = Path(held["quarantined_as"])
    assert copy == Layout(cfg.home).quarantine(DS) / "unreadable" / path.relative_to(cfg.home / "data" / "raw")
    assert copy.read_bytes() == torn_bytes == path.read_bytes()  # copied; the raw log itself stays as it was
    assert copy.with_name(copy.name + ".reason").read_text().startswith(f"impressions dt={DS}/hour=07: EOFError")
    assert join_logs.run(cfg, DS)["checksum"] == stats["checksum"]  # a rerun replaces the quarantine as a whole
