"""Streaming a split's Parquet row groups into training batches: every row once per epoch, bounded, sharded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import PctrConfig, load_config
from core.layout import Layout
from jobs.split_stream import common_steps, row_groups, shard, stream_dataset
from jobs.training_set import write_split
from models.features import BY_NAME

DS = "2026-11-06"
FEATURES = [BY_NAME["user_id"], BY_NAME["position"], BY_NAME["user_ctr_7d"]]


@pytest.fixture()
def cfg(tmp_path: Path) -> PctrConfig:
    return load_config(home=tmp_path)


def _write(cfg: PctrConfig, split: str, rows: int, shuffle_seed: int | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(rows)],
            "position": np.arange(rows, dtype=np.int64) % 5,
            "user_ctr_7d": np.where(np.arange(rows) % 7 == 0, np.nan, 0.5),  # nulls take the spec default
            "label": (np.arange(rows) % 3 == 0).astype(np.int64),
        }
    )
    write_split(frame, Layout(cfg.home).training_set(DS) / split, shuffle_seed)
    return frame


def _epoch(groups, batch_size: int, seed: int | None) -> list[tuple[dict, np.ndarray]]:
    batches = stream_dataset(groups, FEATURES, batch_size, shuffle_seed=seed)
    return [({k: v.numpy() for k, v in columns.items()}, labels.numpy()) for columns, labels in batches]


def test_a_split_is_written_in_row_groups_that_the_ranks_share_out(cfg: PctrConfig) -> None:
    _write(cfg, "train", 1000)
    groups = row_groups(cfg, DS, "train")
    assert len(groups) == 8 and sum(g.rows for g in groups) == 1000
    ranks = [shard(groups, rank, 2) for rank in range(2)]
    assert sorted(ranks[0] + ranks[1], key=lambda g: g.index) == groups
    # both ranks take the same number of full batches, which neither lacks
    steps = common_steps(groups, 2, 64)
    assert all(steps * 64 <= sum(g.rows for g in mine) for mine in ranks)
    assert steps == min(sum(g.rows for g in mine) for mine in ranks) // 64


def test_an_epoch_yields_every_row_once_in_full_batches_with_defaults_filled(cfg: PctrConfig) -> None:
    _write(cfg, "train", 1000, shuffle_seed=3)
    batches = _epoch(row_groups(cfg, DS, "train"), 64, seed=0)
    assert [len(labels) for _, labels in batches] == [64] * 15 + [1000 - 15 * 64]
    users = np.concatenate([columns["user_id"].ravel() for columns, _ in batches])
    assert sorted(users) == sorted(f"u{i}".encode() for i in range(1000))
    ctr = np.concatenate([columns["user_ctr_7d"].ravel() for columns, _ in batches])
    assert np.isfinite(ctr).all() and (ctr == 0.0).sum() == len(range(0, 1000, 7))
    # labels travel with their rows through the shuffles
    labels = np.concatenate([labels.ravel() for _, labels in batches])
    assert all(labels[i] == float(int(u[1:]) % 3 == 0) for i, u in enumerate(users))
    assert {columns["position"].dtype for columns, _ in batches} == {np.dtype(np.int64)}


def test_each_epoch_is_reshuffled_and_a_seed_repeats_the_same_epochs(cfg: PctrConfig) -> None:
    _write(cfg, "train", 600, shuffle_seed=1)
    groups = row_groups(cfg, DS, "train")

    def epochs(dataset) -> list[list[bytes]]:
        return [[u for columns, _ in dataset for u in columns["user_id"].numpy().ravel()] for _ in range(2)]

    first, second = epochs(stream_dataset(groups, FEATURES, 50, shuffle_seed=5))
    assert first != second and sorted(first) == sorted(second)
    assert epochs(stream_dataset(groups, FEATURES, 50, shuffle_seed=5)) == [first, second]
    # a run resumed after its first epoch goes on with the second epoch's order
    assert epochs(stream_dataset(groups, FEATURES, 50, shuffle_seed=5, first_epoch=1))[0] == second
    # the file itself was shuffled once; without a seed the order is the file's, every time
    in_file = pd.read_parquet(groups[0].path)["user_id"].str.encode("utf-8").tolist()
    assert in_file != sorted(in_file, key=lambda u: int(u[1:]))
    plain = epochs(stream_dataset(groups, FEATURES, 50))
    assert plain[0] == plain[1] == in_file
