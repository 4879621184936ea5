"""Slowly changing catalog tables (``ads``, ``users``) as of the end of a day, in Spark and in pandas.

Each ``dt=`` partition holds the versions that became valid on that day; the table as of ds is the
newest version per key with ``valid_from`` before the end of ds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.layout import Layout, day_bounds

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

CATALOG_KEYS = {"users": "user_id", "ads": "ad_id"}


def _partitions(layout: Layout, table: str, as_of_ds: str) -> list[Path]:
    base = layout.catalog(table)
    parts = sorted(p for p in base.glob("dt=*") if p.name[3:] <= as_of_ds)
    if not parts:
        raise FileNotFoundError(f"no {table} catalog on or before {as_of_ds} under {base}")
    return parts


def latest_catalog_spark(spark: SparkSession, layout: Layout, table: str, as_of_ds: str) -> DataFrame:
    """The table as of the end of ``as_of_ds`` as a Spark frame."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    parts = _partitions(layout, table, as_of_ds)
    rows = spark.read.option("basePath", str(layout.catalog(table))).parquet(*[str(p) for p in parts])
    rows = rows.where(F.col("valid_from") < F.lit(day_bounds(as_of_ds)[1]))
    newest = Window.partitionBy(CATALOG_KEYS[table]).orderBy(F.col("valid_from").desc())
    return rows.withColumn("_rank", F.row_number().over(newest)).where("_rank = 1").drop("_rank", "dt")


def latest_catalog(layout: Layout, table: str, as_of_ds: str) -> pd.DataFrame:
    """The table as of the end of ``as_of_ds`` as a pandas frame (for catalogs that fit in memory)."""
    import pandas as pd

    rows = pd.concat([pd.read_parquet(p) for p in _partitions(layout, table, as_of_ds)], ignore_index=True)
    rows = rows[rows["valid_from"] < day_bounds(as_of_ds)[1]]
    newest = rows.sort_values("valid_from", kind="stable").drop_duplicates(CATALOG_KEYS[table], keep="last")
    return newest.reset_index(drop=True)
