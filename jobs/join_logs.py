"""Spark log join: impressions + clicks of one day (or one hour) -> labelled, downsampled training rows.

``run`` closes a day (``pctr_daily``) or an hour (``YYYY-MM-DDTHH``, ``pctr_hourly``) with the same code: an
hour's join reads its day's impressions up to and including the hour, so that duplicates and the
exposures feature are decided over the day as the daily join decides them, and writes, counts and
quarantines the records of the hour's own raw files only. Its rows equal the daily join's rows of that hour.

Accounting (every raw record of the day lands in exactly one bucket; ``_stats.json`` counts each bucket on
its own, the quarantine from the files written, and the stage fails unless they add up):
- impressions of ds: ``output_rows`` + ``downsampled_negatives`` + quarantined (malformed,
  schema_violation, out_of_range, duplicate);
- click records that arrived on ds (partition dt=ds): ``clean_clicks`` + quarantined (malformed,
  schema_violation, orphan_click, duplicate_click). A clean click labels its impression only if it
  arrives within the attribution window; the join of ds also reads the clicks that arrive up to
  window-hours after ds ends, which is why ds can only be closed once those hours are complete
  (``jobs.wait_for_logs``: the join fails naming the first hour that is not).

Every raw file is read through once before Spark reads it (``core.raw_logs.scan_files``). An unreadable
one fails the join with a line naming it, unless ``join.unreadable_files = "quarantine"``: then it is
copied into the quarantine (``unreadable/``, its cause beside it) and the day is closed without it;
``unreadable_files`` in the stats lists each with the complete lines it gave before its error (it held at
least that many), and ``unreadable_lines`` sums them for the files accounted on ds (its impressions, the
clicks that arrived on it), outside the equations above, which count the lines read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import PctrConfig
from core.io import Stats, staged_dir, write_stats
from core.layout import Layout, day_bounds, is_hour, period_bounds, period_day, shift_ds
from core.raw_logs import (
    CLICK_FIELDS,
    IMPRESSION_FIELDS,
    REQUIRED_IMPRESSION,
    RawFile,
    RawHour,
    all_of,
    copy_unreadable,
    read_raw_events,
    readable_files,
)
from core.spark import spark_session
from jobs.wait_for_logs import require_closable
from models.features import EXPOSURES_FEATURE, EXPOSURES_KEYS, EXPOSURES_ORDER

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

# the columns of a labelled row: of the eval sample, and of the joined rows before their sampling weight
ROW_COLUMNS = (
    "impression_id", "request_id", "ts", "user_id", "ad_id", "advertiser_id", "campaign_id",
    "placement", "position", "device", "os", "country", "bid", "hour", EXPOSURES_FEATURE, "label", "click_ts",
)  # fmt: skip
OUTPUT_COLUMNS = (*ROW_COLUMNS, "neg_rate", "weight")
# the un-downsampled labelled log: what the feature job counts impressions and clicks from
LABELLED_COLUMNS = ("impression_id", "ts", "user_id", "ad_id", "advertiser_id", "label")
QUARANTINE_COLUMNS = ("event", "reason", "impression_id", "raw")


def _hash_fraction(column: str, salt: str) -> Column:
    """A deterministic uniform [0, 1) draw per key: the same impression is always kept or dropped."""
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.lit(salt), F.col(column)), F.lit(1_000_000)) / F.lit(1_000_000.0)


def _checksum(df: DataFrame) -> str:
    """Order-independent checksum of rows: sum of per-row 64-bit hashes, modulo 2**64."""
    from pyspark.sql import functions as F

    total = df.select(F.sum(F.xxhash64(*df.columns).cast("decimal(38,0)")).alias("s")).collect()[0]["s"]
    return f"{int(total or 0) % 2**64:016x}"


def _quarantine(df: DataFrame, event: str, reason: Column) -> DataFrame:
    from pyspark.sql import functions as F

    return df.select(F.lit(event).alias("event"), reason.alias("reason"), "impression_id", "raw")


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Join the impressions of ``ds`` (a day, or an hour ``YYYY-MM-DDTHH``) with their clicks, quarantine bad
    records, label and downsample."""
    from pyspark.sql import functions as F

    started = time.time()
    layout = Layout(cfg.home)
    day = period_day(ds)
    files, unreadable = readable_files(cfg, require_closable(cfg, ds))
    imp_paths = _paths(files, "impressions", day)
    if not any(_in_period(f.hour, ds) for f in files if f.hour.event == "impressions"):
        raise FileNotFoundError(f"no impressions for {ds} under {layout.raw('impressions', day)}")
    spark = spark_session(cfg)

    imps = _parsed_impressions(spark, cfg, imp_paths, ds)
    valid = _persist(_mark_later_copies(imps.where(F.col("reason").isNull())))
    clean = valid.where(F.col("reason").isNull())
    own_imps, own_valid = imps.where("in_period"), valid.where("in_period")
    clicks = _parsed_clicks(spark, _paths(files, "clicks"))
    labelled = _labelled(clean, clicks, cfg.join.attribution_window_hours)
    rows = _persist(_sampled_rows(cfg, labelled).where("in_period").drop("in_period"))
    joined, eval_sample, labelled_log = _outputs(cfg, rows)
    arrived = _arrived_clicks(spark, ds, clicks, clean, _paths(files, "impressions", shift_ds(day, -1)))
    quarantine = _quarantine(own_imps.where(F.col("reason").isNotNull()), "impression", F.col("reason"))
    quarantine = quarantine.unionByName(
        _quarantine(own_valid.where(F.col("reason").isNotNull()), "impression", F.col("reason"))
    ).unionByName(_quarantine(arrived.where(F.col("reason").isNotNull()), "click", F.col("reason")))

    # the quarantine and the labelled log first: the counts read them back from the files written
    held = _write_quarantine(layout, ds, quarantine, unreadable)
    _write_partition(layout.labelled(ds), labelled_log, partitions=2)
    counts = _counts(spark, layout, ds, imps=own_imps, valid=own_valid, rows=rows, arrived=arrived)
    _write_partition(layout.eval_sample(ds), eval_sample, partitions=2)
    stats = _stats(ds, cfg, layout, checksum=_checksum(joined), seconds=time.time() - started, **counts)
    stats.update(unreadable_files=held, unreadable_lines=_unreadable_lines(unreadable, ds))
    _write_partition(layout.joined(ds), joined, partitions=4, stats=stats)
    for df in (imps, valid, clicks, rows, arrived):
        df.unpersist()
    return stats


def _persist(df: DataFrame) -> DataFrame:
    """Cache a frame that several actions read.

    Cached frames carry the raw lines (for the quarantine): serialized, spilling to disk, they fit a
    10M-impression day in local mode.
    """
    from pyspark import StorageLevel

    return df.persist(StorageLevel.MEMORY_AND_DISK)


def _paths(files: list[RawFile], event: str, ds: str | None = None) -> list[str]:
    """The readable files of ``event`` (of day ``ds`` only, if given)."""
    return [str(f.path) for f in files if f.hour.event == event and ds in (None, f.hour.ds)]


def _in_period(hour: RawHour, ds: str) -> bool:
    """Whether a raw hour partition lies in the day or the hour ``ds``."""
    return hour.ds == period_day(ds) and (not is_hour(ds) or hour.hour == period_bounds(ds)[0].hour)


def _period_files(ds: str) -> str:
    """What the path of every raw file of the day or the hour ``ds`` holds (Spark's ``input_file_name``)."""
    start = period_bounds(ds)[0]
    return f"/dt={period_day(ds)}/hour={start.hour:02d}/" if is_hour(ds) else f"/dt={ds}/"


def _unreadable_lines(unreadable: list[RawFile], ds: str) -> dict[str, int]:
    """Complete lines the unreadable files accounted on ds gave before their error: its impressions, its clicks."""
    return {
        event: sum(f.lines for f in unreadable if f.hour.event == event and _in_period(f.hour, ds))
        for event in ("impressions", "clicks")
    }


def _parsed_impressions(spark: SparkSession, cfg: PctrConfig, imp_paths: list[str], ds: str) -> DataFrame:
    """Every impression line of ``imp_paths``, with ``reason`` set where it is malformed, incomplete or out of
    range (outside the day), and ``in_period``: whether its file lies in the day or the hour ds (cached)."""
    from pyspark.sql import functions as F

    start, end = day_bounds(period_day(ds))
    imps = (
        read_raw_events(spark, imp_paths, IMPRESSION_FIELDS)
        .withColumn("ts_parsed", F.to_timestamp("ts"))
        .withColumn("line_no", F.monotonically_increasing_id())
        .withColumn("in_period", F.col("source_file").contains(_period_files(ds)))
    )
    missing_required = ~all_of([F.col(c).isNotNull() for c in REQUIRED_IMPRESSION]) | F.col("ts_parsed").isNull()
    out_of_range = (
        (F.col("bid") <= 0)
        | (F.col("bid") > cfg.join.max_bid)
        | (F.col("position") < 1)
        | (F.col("position") > cfg.join.max_position)
        | (F.col("ts_parsed") < F.lit(start))
        | (F.col("ts_parsed") >= F.lit(end))
    )
    return _persist(  # parsed once: the costliest step
        imps.withColumn(
            "reason",
            F.when(F.col("parse_error").isNotNull(), F.col("parse_error"))
            .when(missing_required, "schema_violation")
            .when(out_of_range, "out_of_range"),
        )
    )


def _parsed_clicks(spark: SparkSession, click_paths: list[str]) -> DataFrame:
    """Click lines from the start of ds to the end of its attribution window, ``reason`` set on bad ones (cached).

    Those that arrived on ds are accounted here; all of them label rows.
    """
    from pyspark.sql import functions as F

    clicks = read_raw_events(spark, click_paths, CLICK_FIELDS).withColumn("click_ts", F.to_timestamp("ts"))
    return _persist(
        clicks.withColumn(
            "reason",
            F.when(F.col("parse_error").isNotNull(), F.col("parse_error")).when(
                F.col("impression_id").isNull() | F.col("click_ts").isNull(), "schema_violation"
            ),
        )
    )


def _labelled(clean: DataFrame, clicks: DataFrame, window_h: int) -> DataFrame:
    """Clean impressions with ``label`` 1 where their first good click came within the attribution window.

    ``click_ts`` is kept only on positives.
    """
    from pyspark.sql import functions as F

    good_clicks = clicks.where(F.col("reason").isNull())
    first_click = good_clicks.groupBy("impression_id").agg(F.min("click_ts").alias("click_ts"))
    labelled = clean.join(first_click, "impression_id", "left").withColumn(
        "label",
        (
            F.col("click_ts").isNotNull()
            & (F.col("click_ts") >= F.col("ts_parsed"))
            & (F.col("click_ts") <= F.col("ts_parsed") + F.expr(f"INTERVAL {window_h} HOURS"))
        ).cast("int"),
    )
    return labelled.withColumn("click_ts", F.when(F.col("label") == 1, F.col("click_ts")))


def _sampled_rows(cfg: PctrConfig, labelled: DataFrame) -> DataFrame:
    """The ``ROW_COLUMNS`` of every labelled impression, with ``kept`` (downsampling), ``in_eval`` and ``in_period``
    flags."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # every clean impression of ds is in this partition: its rank within (user, ad) is the day's earlier
    # exposures, as the spec defines them (ordered on the parsed ts)
    exposure_order = ["ts_parsed" if c == "ts" else c for c in EXPOSURES_ORDER]
    exposures = Window.partitionBy(*EXPOSURES_KEYS).orderBy(*exposure_order)
    computed = {
        "ts": F.col("ts_parsed").alias("ts"),
        "hour": F.hour("ts_parsed").cast("long").alias("hour"),
        EXPOSURES_FEATURE: (F.row_number().over(exposures) - 1).cast("long").alias(EXPOSURES_FEATURE),
    }
    return labelled.select(
        *[computed.get(c, c) for c in ROW_COLUMNS],
        ((F.col("label") == 1) | (_hash_fraction("impression_id", "neg") < cfg.join.neg_rate)).alias("kept"),
        (_hash_fraction("impression_id", "eval") < cfg.join.eval_sample_rate).alias("in_eval"),
        "in_period",
    )


def _outputs(cfg: PctrConfig, rows: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
    """The joined (downsampled, weighted) rows, the un-downsampled eval sample and the labelled log."""
    from pyspark.sql import functions as F

    row_names = [c for c in rows.columns if c not in ("kept", "in_eval")]
    joined = rows.where("kept").select(
        *row_names,
        F.lit(cfg.join.neg_rate).alias("neg_rate"),
        F.when(F.col("label") == 1, 1.0).otherwise(1.0 / cfg.join.neg_rate).alias("weight"),
    )
    eval_sample = rows.where("in_eval").select(*row_names)
    return joined, eval_sample, rows.select(*LABELLED_COLUMNS)


def _arrived_clicks(
    spark: SparkSession, ds: str, clicks: DataFrame, clean: DataFrame, previous_imp_paths: list[str]
) -> DataFrame:
    """The clicks that arrived on ds (the day or the hour), ``reason`` also set on orphans and later copies
    (cached): their accounting.

    Orphans match no impression of ds's day (``clean``: up to the end of ds) or of the day before
    (``previous_imp_paths``).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    arrived = clicks.where(F.col("source_file").contains(_period_files(ds)))
    known_ids = clean.select("impression_id")
    if previous_imp_paths:
        prev_ids = spark.read.text(previous_imp_paths).select(
            F.json_tuple("value", "impression_id").alias("impression_id")
        )
        known_ids = known_ids.unionByName(prev_ids.where(F.col("impression_id").isNotNull()))
    # only the ids that clicks refer to matter: a semi join first keeps the distinct small
    arrived_ids = arrived.select("impression_id").where(F.col("impression_id").isNotNull())
    known_ids = known_ids.join(arrived_ids, "impression_id", "left_semi").distinct().withColumn("known", F.lit(True))
    click_rank = Window.partitionBy("impression_id").orderBy("click_ts", "source_file", "raw")
    return _persist(
        arrived.join(known_ids, "impression_id", "left")
        .withColumn("rank", F.when(F.col("reason").isNull(), F.row_number().over(click_rank)))
        .withColumn(
            "reason",
            F.when(F.col("reason").isNotNull(), F.col("reason"))
            .when(F.col("known").isNull(), "orphan_click")
            .when(F.col("rank") > 1, "duplicate_click"),
        )
    )


def _counts(
    spark: SparkSession, layout: Layout, ds: str, *, imps: DataFrame, valid: DataFrame, rows: DataFrame,
    arrived: DataFrame,
) -> dict[str, Any]:  # fmt: skip
    """The bucket counts that ``_stats`` reconciles (run after the quarantine and labelled log are written).

    Each side of the accounting is counted on its own: inputs on the cached frames, the quarantine
    from the files written, kept and downsampled rows separately. A record lost or counted twice
    anywhere breaks an equation in ``_stats``.
    """
    from pyspark.sql import functions as F

    written = spark.read.parquet(str(layout.quarantine(ds) / "data")).groupBy("event", "reason").count().collect()
    kept = rows.agg(
        F.sum(F.col("kept").cast("long")).alias("n_out"),
        F.sum((~F.col("kept")).cast("long")).alias("downsampled"),
        F.sum((F.col("kept") & (F.col("label") == 1)).cast("long")).alias("positives"),
        F.sum(F.col("in_eval").cast("long")).alias("eval_rows"),
    ).first()
    return {
        "n_imps": imps.count(),
        "n_clean": valid.where(F.col("reason").isNull()).count(),
        "n_out": kept["n_out"] or 0,
        "downsampled": kept["downsampled"] or 0,
        "positives": kept["positives"] or 0,
        "eval_rows": kept["eval_rows"] or 0,
        "n_arrived": arrived.count(),
        "clean_clicks": arrived.where(F.col("reason").isNull()).count(),
        "q_counts": {f"{r['event']}:{r['reason']}": r["count"] for r in written},
        "labelled_rows": spark.read.parquet(str(layout.labelled(ds) / "data")).count(),
    }


def _mark_later_copies(imps: DataFrame) -> DataFrame:
    """``reason = "duplicate"`` on every copy of an impression but the first (by time, then file and line).

    Only ids seen more than once are ranked, so the wide rows (they carry the raw line) never go
    through a shuffle.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    repeated = imps.groupBy("impression_id").count().where(F.col("count") > 1).select("impression_id")
    first = Window.partitionBy("impression_id").orderBy("ts_parsed", "source_file", "line_no")
    later = (
        imps.select("impression_id", "ts_parsed", "source_file", "line_no")
        .join(repeated, "impression_id", "left_semi")
        .withColumn("copy", F.row_number().over(first))
        .where(F.col("copy") > 1)
        .select("line_no", F.lit("duplicate").alias("duplicate"))
    )
    # redelivered copies are a small share of a day's lines: broadcast, the wide side stays in place
    return imps.join(F.broadcast(later), "line_no", "left").withColumn("reason", F.col("duplicate")).drop("duplicate")


def _write_partition(final: Path, df: DataFrame, partitions: int, stats: Stats | None = None) -> None:
    """Replace one ds partition atomically; rows sorted by id so reruns write identical files."""
    with staged_dir(final) as scratch:
        _write_rows(scratch / "data", df, partitions)
        if stats is not None:
            write_stats(scratch, stats)


def _write_rows(path: Path, df: DataFrame, partitions: int) -> None:
    df.repartition(partitions, "impression_id").sortWithinPartitions("impression_id").write.parquet(str(path))


def _write_quarantine(layout: Layout, ds: str, records: DataFrame, unreadable: list[RawFile]) -> list[dict[str, Any]]:
    """Replace the quarantine of ds: the rejected records, and copies of the unreadable files under ``unreadable/``.

    Returns the unreadable files' summaries, each with where its copy lies once the partition is in place.
    """
    held = []
    with staged_dir(layout.quarantine(ds)) as scratch:
        _write_rows(scratch / "data", records, partitions=1)
        for raw_file in unreadable:
            copy = copy_unreadable(raw_file, layout, scratch / "unreadable")
            final_copy = layout.quarantine(ds) / copy.relative_to(scratch)
            held.append({**raw_file.summary(), "quarantined_as": str(final_copy)})
    return held


def _stats(
    ds: str,
    cfg: PctrConfig,
    layout: Layout,
    *,
    n_imps: int,
    n_clean: int,
    n_out: int,
    downsampled: int,
    positives: int,
    q_counts: dict[str, int],
    n_arrived: int,
    clean_clicks: int,
    eval_rows: int,
    labelled_rows: int,
    checksum: str,
    seconds: float,
) -> Stats:
    imp_q = sum(v for k, v in q_counts.items() if k.startswith("impression:"))
    click_q = sum(v for k, v in q_counts.items() if k.startswith("click:"))
    stats: Stats = {
        "stage": "join_logs",
        "ds": ds,
        "input_impressions": n_imps,
        "input_clicks": n_arrived,
        "clean_impressions": n_clean,
        "output_rows": n_out,
        "positives": positives,
        "downsampled_negatives": downsampled,
        "duplicates": q_counts.get("impression:duplicate", 0),
        "clean_clicks": clean_clicks,
        "quarantined": dict(sorted(q_counts.items())),
        "neg_rate": cfg.join.neg_rate,
        "attribution_window_hours": cfg.join.attribution_window_hours,
        "ctr_clean": positives / n_clean if n_clean else 0.0,
        "output_path": str(layout.joined(ds) / "data"),
        "eval_sample_path": str(layout.eval_sample(ds) / "data"),
        "eval_sample_rows": eval_rows,
        "labelled_path": str(layout.labelled(ds) / "data"),
        "labelled_rows": labelled_rows,
        "quarantine_path": str(layout.quarantine(ds) / "data"),
        "checksum": checksum,
        "seconds": round(seconds, 2),
    }
    impressions_reconcile = n_imps == n_clean + imp_q and n_clean == n_out + downsampled == labelled_rows
    clicks_reconcile = n_arrived == clean_clicks + click_q
    stats["reconciled"] = impressions_reconcile and clicks_reconcile
    if not stats["reconciled"]:
        raise RuntimeError(f"join counts do not reconcile for ds={ds}: {stats}")
    return stats
