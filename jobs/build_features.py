"""Spark feature job: per-entity batch features of one day, named and typed by the feature spec.

Counts come from the joined (downsampled) rows re-weighted by 1/neg_rate, which estimates the
un-downsampled impression counts without a second pass over raw logs. Windowed statistics are sums of
daily aggregates, so a day is computed once and every later window reuses it. Features of ds carry
event time = the last microsecond of ds: impressions after ds see them, impressions of ds do not.
"""

from __future__ import annotations

import os
import shutil
import time
from functools import reduce
from typing import TYPE_CHECKING

from jobs.config import PctrConfig
from jobs.io import Stats, staged_dir, write_stats
from jobs.layout import FEATURE_ENTITIES, Layout, day_bounds, feature_event_time, shift_ds
from jobs.spark import spark_session
from models.features import CTR_PRIOR_IMPRESSIONS, ENTITY_KEYS, WINDOWS_DAYS, batch_features

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SECONDS_PER_DAY = 86_400.0


def _daily_aggregates(spark: SparkSession, layout: Layout, ds: str) -> dict[str, DataFrame]:
    from pyspark.sql import functions as F

    joined = spark.read.parquet(str(layout.joined(ds) / "data"))
    out = {}
    for entity in FEATURE_ENTITIES:
        key = ENTITY_KEYS[entity]
        out[entity] = joined.groupBy(key).agg(
            F.sum("weight").alias("impressions"),
            F.sum("label").cast("double").alias("clicks"),
            F.max("ts").alias("last_ts"),
        )
    return out


def _windowed(spark: SparkSession, layout: Layout, entity: str, ds: str) -> DataFrame:
    """Impressions, clicks and smoothed CTR over each window ending at ds, plus recency."""
    from pyspark.sql import functions as F

    key = ENTITY_KEYS[entity]
    frames = [
        spark.read.parquet(str(layout.daily_aggregates(entity, day) / "data")).withColumn("age_days", F.lit(age))
        for age, day in ((age, shift_ds(ds, -age)) for age in range(max(WINDOWS_DAYS)))
        if layout.daily_aggregates(entity, day).exists()
    ]
    daily = reduce(lambda a, b: a.unionByName(b), frames)
    aggs = [F.max("last_ts").alias("last_ts")]
    for w in WINDOWS_DAYS:
        in_window = F.col("age_days") < w
        aggs += [
            F.sum(F.when(in_window, F.col("impressions")).otherwise(0.0)).alias(f"{entity}_impressions_{w}d"),
            F.sum(F.when(in_window, F.col("clicks")).otherwise(0.0)).alias(f"{entity}_clicks_{w}d"),
        ]
    stats = daily.groupBy(key).agg(*aggs)
    # smoothing towards the global CTR of the same window keeps sparse entities from extreme CTRs
    totals = daily.agg(
        *[F.sum(F.when(F.col("age_days") < w, F.col("clicks"))).alias(f"c{w}") for w in WINDOWS_DAYS],
        *[F.sum(F.when(F.col("age_days") < w, F.col("impressions"))).alias(f"i{w}") for w in WINDOWS_DAYS],
    ).collect()[0]
    for w in WINDOWS_DAYS:
        global_ctr = (totals[f"c{w}"] or 0.0) / max(totals[f"i{w}"] or 0.0, 1.0)
        stats = stats.withColumn(
            f"{entity}_ctr_{w}d",
            (F.col(f"{entity}_clicks_{w}d") + F.lit(CTR_PRIOR_IMPRESSIONS * global_ctr))
            / (F.col(f"{entity}_impressions_{w}d") + F.lit(CTR_PRIOR_IMPRESSIONS)),
        )
    return stats


def _latest_catalog(spark: SparkSession, layout: Layout, table: str, as_of_ds: str) -> DataFrame:
    """Slowly changing table as of the end of ``as_of_ds``: the newest version per key."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    key = {"users": "user_id", "ads": "ad_id"}[table]
    base = layout.catalog(table)
    parts = sorted(p for p in base.glob("dt=*") if p.name[3:] <= as_of_ds)
    if not parts:
        raise FileNotFoundError(f"no {table} catalog on or before {as_of_ds} under {base}")
    rows = spark.read.option("basePath", str(base)).parquet(*[str(p) for p in parts])
    rows = rows.where(F.col("valid_from") < F.lit(day_bounds(as_of_ds)[1]))
    newest = Window.partitionBy(key).orderBy(F.col("valid_from").desc())
    return rows.withColumn("_rank", F.row_number().over(newest)).where("_rank = 1").drop("_rank", "dt")


def _entity_frames(spark: SparkSession, layout: Layout, ds: str) -> dict[str, DataFrame]:
    """All entities known at the end of ds (with or without activity), joined with their statistics."""
    from pyspark.sql import functions as F

    end = day_bounds(ds)[1]
    users = _latest_catalog(spark, layout, "users", ds)
    ads = _latest_catalog(spark, layout, "ads", ds).where(F.col("launch_ts") < F.lit(end))
    base = {
        "user": users.select(
            "user_id", F.col("age_bucket").alias("user_age_bucket"), F.col("gender").alias("user_gender")
        ),
        "ad": ads.select(
            "ad_id",
            F.col("category").alias("ad_category"),
            F.col("creative_type").alias("ad_creative_type"),
            ((F.lit(end).cast("double") - F.col("launch_ts").cast("double")) / SECONDS_PER_DAY).alias("ad_age_days"),
        ),
        "advertiser": ads.select("advertiser_id").distinct(),
    }
    frames = {}
    for entity, entities in base.items():
        key = ENTITY_KEYS[entity]
        stats = _windowed(spark, layout, entity, ds)
        frame = entities.join(stats, key, "left")
        if entity == "user":
            frame = frame.withColumn(
                "user_days_since_last_impression",
                (F.lit(end).cast("double") - F.col("last_ts").cast("double")) / SECONDS_PER_DAY,
            )
        frames[entity] = frame
    return frames


def _finalise(frame: DataFrame, entity: str, ds: str) -> DataFrame:
    """Select the spec's columns in spec order, fill the spec's defaults, cast to the spec's types."""
    from pyspark.sql import functions as F

    spark_types = {"string": "string", "int64": "bigint", "float32": "float"}
    cols = [F.col(ENTITY_KEYS[entity])]
    for feature in batch_features(entity):  # type: ignore[arg-type]
        value = F.coalesce(F.col(feature.name), F.lit(feature.default))
        cols.append(value.cast(spark_types[feature.dtype]).alias(feature.name))
    event_time = F.lit(feature_event_time(ds)).cast("timestamp")
    return frame.select(*cols, event_time.alias("event_timestamp"), event_time.alias("created_timestamp"))


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Compute the daily aggregates of ds and the feature files of ds for every entity."""
    started = time.time()
    layout = Layout(cfg.home)
    spark = spark_session(cfg)
    if not (layout.joined(ds) / "_stats.json").exists():
        raise FileNotFoundError(f"joined logs of ds={ds} are missing: run `pctr join-logs --ds {ds}` first")

    for entity, daily in _daily_aggregates(spark, layout, ds).items():
        with staged_dir(layout.daily_aggregates(entity, ds)) as scratch:
            daily.coalesce(1).write.parquet(str(scratch / "data"))

    rows: dict[str, int] = {}
    for entity, frame in _entity_frames(spark, layout, ds).items():
        final = _finalise(frame, entity, ds).orderBy(ENTITY_KEYS[entity])
        with staged_dir(layout.features(entity, ds)) as scratch:
            final.coalesce(1).write.parquet(str(scratch / "spark"))
            # one plain file per ds so that Feast's source is a simple glob over days
            os.replace(next((scratch / "spark").glob("part-*.parquet")), scratch / "features.parquet")
            shutil.rmtree(scratch / "spark")
        rows[entity] = spark.read.parquet(str(layout.features(entity, ds) / "features.parquet")).count()

    stats: Stats = {
        "stage": "build_features",
        "ds": ds,
        "rows": rows,
        "features": {entity: len(batch_features(entity)) for entity in FEATURE_ENTITIES},  # type: ignore[arg-type]
        "event_timestamp": feature_event_time(ds).isoformat(),
        "output_paths": {entity: str(layout.features(entity, ds)) for entity in FEATURE_ENTITIES},
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(layout.stage_output("build_features", ds), stats)
