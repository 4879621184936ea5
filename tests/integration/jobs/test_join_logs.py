"""The Spark log join on a tiny simulated day with every kind of fault."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from core.config import PctrConfig, load_config
from core.layout import Layout
from jobs import join_logs
from models.features import EXPOSURES_FEATURE
from simulator import logs

pytestmark = pytest.mark.integration
DS = "2026-11-02"


def _raw_digest(layout: Layout) -> str:
    digest = hashlib.sha256()
    for path in sorted((layout.home / "data" / "raw").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> tuple[PctrConfig, dict, dict, str, str]:
    cfg = load_config(home=tmp_path_factory.mktemp("join"))
    sim = logs.run(cfg, start="2026-11-01", days=2, scale="tiny", faults=0.02)
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


def test_a_day_whose_clicks_have_not_arrived_cannot_be_closed(joined) -> None:
    cfg, *_ = joined
    long_window = cfg.model_copy(deep=True)
    long_window.join.attribution_window_hours = 72
    with pytest.raises(FileNotFoundError, match="cannot be closed yet"):
        join_logs.run(long_window, DS)
