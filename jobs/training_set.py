"""Point-in-time training sets from Feast for the run closing ds.

Temporal splits (nothing from a later slice is ever used to fit an earlier stage):
- train:       joined (downsampled) rows of the ``history_days`` days ending ds-2
- validation:  joined rows of ds-1 (early stopping)
- calibration: un-downsampled eval sample of ds-1 (fits the calibrator)
- holdout:     un-downsampled eval sample of ds (all reported metrics)
The hourly refresh of the hour H (``pctr_hourly``, ds = ``YYYY-MM-DDTHH``) splits hours the same way
(``core.config.HourlyConfig``): by default train on the 6 hours ending H-2, validate and calibrate on H-1,
hold out H. An hour's
rows are its hourly partition's or, once its day is closed, the daily partition's rows of that hour (the
same rows: ``jobs.join_logs``).

Each impression at time t gets the batch features with event time <= t from Feast
(``get_historical_features`` with the ``ranker_v1`` service): those of the newest day whose features
existed at t (``core.layout.feature_event_time``), the day before in most hours, two days before in the
first hours of a day, as serving would have had them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.catalog import latest_catalog
from core.config import PctrConfig
from core.io import Stats, read_json, staged_dir, write_json_atomic, write_stats
from core.layout import FEATURE_STATS, Layout, is_hour, period_bounds, period_day, shift_ds, shift_hour
from feature_repo.store import feature_store
from models.features import (
    BY_NAME,
    CATEGORY_FEATURE,
    CATEGORY_KEY,
    MODEL_FEATURES,
    RANKER_SERVICE,
    request_features,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from feast import FeatureService, FeatureStore

    from models.frames import FeatureStats

LABEL_COLUMNS = ("impression_id", "ts", "label", "weight", "neg_rate")
# Rows per Parquet row group of a split: what a training reader holds at once, and the unit of its sharding
# (a small split still gets MIN_ROW_GROUPS, so that every Horovod rank has some).
ROW_GROUP_ROWS = 32_768
MIN_ROW_GROUPS = 8


def split_days(cfg: PctrConfig, ds: str) -> dict[str, tuple[str, list[str]]]:
    """Split name -> (source kind, days), or hours for an hourly run."""
    if is_hour(ds):
        hourly = cfg.hourly
        holdout = [shift_hour(ds, -h) for h in range(hourly.holdout_hours - 1, -1, -1)]
        calibration = [shift_hour(holdout[0], -h) for h in range(hourly.calibration_hours, 0, -1)]
        train = [shift_hour(calibration[0], -h) for h in range(hourly.train_hours, 0, -1)]
        return {
            "train": ("joined", train),
            "validation": ("joined", calibration),
            "calibration": ("eval_sample", calibration),
            "holdout": ("eval_sample", holdout),
        }
    history = cfg.train.history_days
    return {
        "train": ("joined", [shift_ds(ds, -d) for d in range(history + 1, 1, -1)]),
        "validation": ("joined", [shift_ds(ds, -1)]),
        "calibration": ("eval_sample", [shift_ds(ds, -1)]),
        "holdout": ("eval_sample", [ds]),
    }


def _partition(layout: Layout, kind: str) -> Callable[[str], Path]:
    return layout.joined if kind == "joined" else layout.eval_sample


def source_partitions(layout: Layout, kind: str, periods: list[str]) -> dict[str, str]:
    """Each day or hour that has rows of ``kind`` (``joined`` or ``eval_sample``) -> the partition holding them:
    its own, or for an hour without one, its closed day's. Periods with neither are left out."""
    sources = {}
    for period in periods:
        candidates = [period, period_day(period)] if is_hour(period) else [period]
        found = [key for key in candidates if (_partition(layout, kind)(key) / "data").exists()]
        if found:
            sources[period] = found[0]
    return sources


def _period_rows(layout: Layout, kind: str, period: str, source: str) -> pd.DataFrame:
    import pandas as pd

    rows = pd.read_parquet(_partition(layout, kind)(source) / "data")
    if source != period:  # an hour's rows from its day's partition
        start, end = (pd.Timestamp(t) for t in period_bounds(period))
        rows = rows[(rows["ts"] >= start) & (rows["ts"] < end)]
    return _with_category(layout, rows, period_day(period))


def entity_rows(layout: Layout, kind: str, days: list[str], sources: dict[str, str] | None = None) -> pd.DataFrame:
    """The split's rows as Feast's entity_df: labels, request features, the ad's category and the event time.

    ``days`` are days, or hours; ``sources`` (``source_partitions``, looked up if not given) says where their
    rows are, and those without a partition are left out. The category key of a row is its ad's category
    in the catalog as of the row's day, the catalog its (user, category) statistics were counted with.
    """
    import pandas as pd

    sources = source_partitions(layout, kind, days) if sources is None else sources
    if not sources:
        raise FileNotFoundError(f"no {kind} partitions for {days}: run join-logs for them first")
    columns = [f.name for f in request_features()]  # the join writes request features under their spec names
    frames = [_period_rows(layout, kind, d, source) for d, source in sources.items()]
    rows = pd.concat(frames, ignore_index=True)
    if "neg_rate" not in rows:  # eval samples are not downsampled
        rows["neg_rate"] = 1.0
        rows["weight"] = 1.0
    rows = rows[[*dict.fromkeys([*LABEL_COLUMNS, *columns, CATEGORY_KEY])]]
    rows["event_timestamp"] = rows["ts"].astype("datetime64[us, UTC]")
    return rows.sort_values(["ts", "impression_id"], kind="stable").reset_index(drop=True)


def _with_category(layout: Layout, rows: pd.DataFrame, ds: str) -> pd.DataFrame:
    """``rows`` of ds with the category key of their ads (the ad feature's default for an ad the catalog lacks)."""
    category = latest_catalog(layout, "ads", ds).set_index("ad_id")["category"]
    return rows.assign(**{CATEGORY_KEY: rows["ad_id"].map(category).fillna(BY_NAME[CATEGORY_FEATURE].default)})


def write_split(df: pd.DataFrame, directory: Path, shuffle_seed: int | None) -> None:
    """The split as one Parquet file of row groups, the unit a reader streams and shards.

    The train split is shuffled once here (seeded): every row group is then a random sample of the
    whole period, so a Horovod rank that reads its row groups in a fresh order each epoch sees
    well-mixed batches without ever holding its shard in memory.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if shuffle_seed is not None:
        df = df.sample(frac=1.0, random_state=shuffle_seed, ignore_index=True)
    directory.mkdir(parents=True)
    rows_per_group = max(1, min(ROW_GROUP_ROWS, -(-len(df) // MIN_ROW_GROUPS)))
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, directory / "part-000.parquet", row_group_size=rows_per_group)


def training_set_sources(cfg: PctrConfig, ds: str) -> dict[str, dict[str, str]]:
    """Split -> the days (or hours) of its rows -> the partition each came from, as the run's training set recorded."""
    return read_json(Layout(cfg.home).training_set(ds) / "_stats.json")["sources"]


def split_files(cfg: PctrConfig, ds: str, split: str) -> list[Path]:
    files = sorted((Layout(cfg.home).training_set(ds) / split).glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files for split {split!r} of ds={ds}: run training-set first")
    return files


def load_split(cfg: PctrConfig, ds: str, split: str) -> pd.DataFrame:
    """One whole split with spec defaults filled and spec dtypes (for the un-downsampled samples and tests)."""
    import pandas as pd

    from models.frames import fill_defaults

    return fill_defaults(pd.concat([pd.read_parquet(f) for f in split_files(cfg, ds, split)], ignore_index=True))


def load_feature_stats(cfg: PctrConfig, ds: str, path: Path | None = None) -> FeatureStats:
    """Preprocessing statistics of the train split of ds (shared by the ranker and the retrieval towers),
    or those at ``path`` (a registered model's, for a warm start)."""
    from models.frames import FeatureStats

    return FeatureStats.from_dict(read_json(path or Layout(cfg.home).training_set(ds) / FEATURE_STATS))


def _feature_stats(cfg: PctrConfig, train: pd.DataFrame) -> dict:
    from models.frames import compute_feature_stats, fill_defaults

    filled = fill_defaults(train)
    columns = {f.name: filled[f.name].to_numpy() for f in MODEL_FEATURES}
    return compute_feature_stats(columns, max_buckets=cfg.train.max_hash_buckets).to_dict()


def retrieve(
    cfg: PctrConfig, store: FeatureStore, service: FeatureService, entity_df: pd.DataFrame, scratch: Path
) -> pd.DataFrame:
    """The entity rows with their point-in-time features from Feast's offline store.

    On Spark the rows pass through Parquet files under ``scratch`` both ways, which the executors read and
    write: Feast's own pandas path (``createDataFrame`` of the entity rows, ``toPandas`` of the result)
    holds a whole split in the driver's heap, which ran out of 3g on the small demo day. ``scratch`` is
    removed afterwards; on a cluster it must be storage that the executors share, as the home is.
    """
    import shutil

    import pandas as pd

    if cfg.features.offline_store != "spark":
        return store.get_historical_features(entity_df=entity_df, features=service).to_df()
    from core.spark import spark_session

    entities, retrieved = scratch / "entities", scratch / "retrieved"
    scratch.mkdir()
    entity_df.to_parquet(entities, index=False)
    rows = spark_session(cfg).read.parquet(str(entities))
    job = store.get_historical_features(entity_df=rows, features=service)
    job.to_spark_df().write.parquet(str(retrieved))
    df = pd.read_parquet(retrieved)
    shutil.rmtree(scratch)
    return df


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Build the four splits of the run closing ``ds`` as Parquet shards under ``runs/<ds>/training_set``."""
    import pandas as pd

    started = time.time()
    layout = Layout(cfg.home)
    store = feature_store(cfg, apply=True)
    service = store.get_feature_service(RANKER_SERVICE)
    counts: dict[str, dict[str, float]] = {}
    sources: dict[str, dict[str, str]] = {}
    with staged_dir(layout.training_set(ds)) as scratch:
        for split, (kind, days) in split_days(cfg, ds).items():
            sources[split] = source_partitions(layout, kind, days)
            entity_df = entity_rows(layout, kind, days, sources[split])
            df = retrieve(cfg, store, service, entity_df, scratch / f"_{split}")
            # the rows come back from Spark with Spark's timestamp type, from duckdb as they were given: a split
            # keeps the entity rows' own, whichever store read its features
            df["ts"] = pd.to_datetime(df["ts"], utc=True).astype(entity_df["ts"].dtype)
            df = df.sort_values(["ts", "impression_id"], kind="stable").reset_index(drop=True)
            if len(df) != len(entity_df):
                raise RuntimeError(f"{split}: Feast returned {len(df)} rows for {len(entity_df)} entity rows")
            shuffle_seed = cfg.train.seed if split == "train" else None
            write_split(df.drop(columns=["event_timestamp"]), scratch / split, shuffle_seed)
            if split == "train" and not is_hour(ds):  # an hourly refresh keeps its live model's statistics
                write_json_atomic(scratch / FEATURE_STATS, _feature_stats(cfg, df))
            counts[split] = {"rows": len(df), "positives": int(df["label"].sum()), "days": len(sources[split])}
    stats: Stats = {
        "stage": "training_set",
        "ds": ds,
        "feature_service": RANKER_SERVICE,
        "splits": counts,
        # split -> the day or hour of its rows -> the partition they came from (itself, or an hour's day)
        "sources": sources,
        "output_path": str(layout.training_set(ds)),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(layout.training_set(ds), stats)
