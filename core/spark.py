"""The one Spark session factory, configured from ``cfg.spark`` (local by default, any master by config)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from core.config import PctrConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_session(cfg: PctrConfig) -> SparkSession:
    """Return the process's Spark session, creating it on first use.

    Sessions are shared per process (start-up costs seconds), so every stage in ``pctr run-day`` or
    one Airflow task process reuses one.
    """
    from pyspark.sql import SparkSession

    if cfg.spark.master.startswith("local"):
        # a hostname that resolves to a non-loopback address makes local Spark warn and sometimes bind badly
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.appName("pctr")
        .master(cfg.spark.master)
        .config("spark.driver.memory", cfg.spark.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        # Raw logs are hourly gzip files, which cannot be split: packed for two cores, a day's 24 went
        # into two tasks of unequal length that left a core idle for seconds; smaller packs balance them
        .config("spark.sql.files.minPartitionNum", "16")
        .config("spark.sql.session.timeZone", "UTC")
        # Feast's duckdb and Spark stores reject nanosecond Parquet timestamps
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.warehouse.dir", str(cfg.home / "tmp" / "spark-warehouse"))
    )
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def stop_spark() -> None:
    """Stop this process's Spark session and its JVM, returning the JVM's memory to the machine.

    ``SparkSession.stop()`` alone leaves the py4j gateway JVM running with its heap; that JVM exits
    when its stdin closes (PySpark's gateway server watches it), so close it and wait.
    """
    import sys

    if "pyspark" not in sys.modules:
        return
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    gateway.shutdown()
    process = getattr(gateway, "proc", None)
    if process is not None:
        process.stdin.close()
        process.wait(timeout=60)
    SparkContext._gateway = None
    SparkContext._jvm = None
