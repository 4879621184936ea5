"""Training batches streamed from a split's Parquet row groups: a worker holds a row group, never its shard.

A split is a Parquet file of row groups (``jobs.training_set``); the train split's rows were shuffled
when it was written, so each row group is a random sample of the whole period. Horovod rank ``r`` of
``n`` reads row groups ``r, r + n, ...``; each epoch it visits them in a fresh seeded order and
permutes the rows within each.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.config import PctrConfig
from jobs.training_set import split_files
from models.features import Feature

if TYPE_CHECKING:
    import tensorflow as tf

Chunk = tuple[dict[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RowGroup:
    path: Path
    index: int
    rows: int


def row_groups(cfg: PctrConfig, ds: str, split: str) -> list[RowGroup]:
    """Every row group of the split, in file order."""
    import pyarrow.parquet as pq

    groups = []
    for path in split_files(cfg, ds, split):
        metadata = pq.ParquetFile(path).metadata
        groups += [RowGroup(path, i, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups)]
    return groups


def shard(groups: Sequence[RowGroup], rank: int, size: int) -> list[RowGroup]:
    """The row groups Horovod rank ``rank`` of ``size`` reads."""
    return list(groups[rank::size])


def common_steps(groups: Sequence[RowGroup], size: int, batch_size: int) -> int:
    """Full batches per epoch that every one of ``size`` ranks has: each must take the same number of steps,
    or the gradient allreduce of the ranks with more waits forever."""
    return min(sum(g.rows for g in shard(groups, rank, size)) for rank in range(size)) // batch_size


def read_row_group(group: RowGroup, features: Sequence[Feature]) -> Chunk:
    """One row group as ``(n, 1)`` columns of the spec's dtypes (defaults filled) and ``(n, 1)`` float32 labels."""
    import pyarrow.parquet as pq

    from models.frames import fill_defaults

    frame = pq.ParquetFile(group.path).read_row_group(group.index, columns=[*(f.name for f in features), "label"])
    filled = fill_defaults(frame.to_pandas(), features)
    columns = {f.name: filled[f.name].to_numpy().reshape(-1, 1) for f in features}
    return columns, filled["label"].to_numpy(dtype=np.float32).reshape(-1, 1)


def iterate_chunks(
    groups: Sequence[RowGroup], features: Sequence[Feature], rng: np.random.Generator | None
) -> Iterator[Chunk]:
    """The row groups one by one; with ``rng``, in a random order and with their rows permuted."""
    for i in rng.permutation(len(groups)) if rng is not None else range(len(groups)):
        columns, labels = read_row_group(groups[i], features)
        if rng is not None:
            perm = rng.permutation(len(labels))
            columns, labels = {name: values[perm] for name, values in columns.items()}, labels[perm]
        yield columns, labels


def stream_dataset(
    groups: Sequence[RowGroup],
    features: Sequence[Feature],
    batch_size: int,
    shuffle_seed: int | None = None,
    first_epoch: int = 0,
) -> tf.data.Dataset:
    """A ``(features dict, label)`` dataset of ``batch_size`` batches over ``groups`` (the last one smaller).

    Python hands TensorFlow whole row groups (one conversion per column, not per batch); ``rebatch``
    cuts them into batches across row-group boundaries in TensorFlow. With a seed, each iteration
    (epoch ``e``, counted from ``first_epoch`` per dataset object: a resumed training run passes the
    epochs it has done) is shuffled by the generator seeded ``(shuffle_seed, e)``: the same seed gives the
    same batches, run after run.
    """
    import tensorflow as tf

    epochs = itertools.count(first_epoch)

    def generate() -> Iterator[Chunk]:
        rng = np.random.default_rng([shuffle_seed, next(epochs)]) if shuffle_seed is not None else None
        yield from iterate_chunks(groups, features, rng)

    signature = (
        {f.name: tf.TensorSpec((None, 1), tf.as_dtype(f.dtype)) for f in features},
        tf.TensorSpec((None, 1), tf.float32),
    )
    chunks = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return chunks.rebatch(batch_size).prefetch(2)
