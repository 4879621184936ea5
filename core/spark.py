"""The one Spark session factory, configured from ``cfg.spark`` (local by default, any master by config)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from core.config import PctrConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def spark_conf(cfg: PctrConfig) -> dict[str, str]:
    """Every setting of pctr's Spark sessions, ``cfg.spark.conf`` last; also Feast's, so both sessions are alike."""
    conf = {
        "spark.master": cfg.spark.master,
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        # Raw logs are hourly gzip files, which cannot be split: packed for two cores, a day's 24 went
        # into two tasks of unequal length that left a core idle for seconds; smaller packs balance them
        "spark.sql.files.minPartitionNum": "16",
        "spark.sql.session.timeZone": "UTC",
        # Feast's duckdb and Spark stores reject nanosecond Parquet timestamps
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.ui.showConsoleProgress": "false",
        # from the start, and in sessions that Feast starts too (a glob path's stack trace is logged at WARN)
        "spark.log.level": "ERROR",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.warehouse.dir": str(cfg.home / "tmp" / "spark-warehouse"),
    }
    if not cfg.spark.master.startswith("local"):
        # executors start Python workers (a pandas DataFrame sent to Spark, e.g. Feast's entity rows) with
        # this interpreter, which must be the driver's version: executors run this checkout's virtualenv
        conf["spark.pyspark.python"] = sys.executable
        if urlsplit(cfg.spark.master).hostname in LOOPBACK_HOSTS:
            # executors of a master on loopback run on this machine and must reach the driver there; its
            # default address is the hostname's, which may not be loopback nor answer
            conf["spark.driver.host"] = "127.0.0.1"
            conf["spark.driver.bindAddress"] = "127.0.0.1"
    return conf | cfg.spark.conf


def spark_session(cfg: PctrConfig) -> SparkSession:
    """Return the process's Spark session, creating it on first use.

    Sessions are shared per process (start-up costs seconds), so every stage in ``pctr run-day`` or
    one Airflow task process reuses one. A standalone master's executors read and write the home by
    the same paths as the driver: it must be on storage they all share.
    """
    from pyspark.sql import SparkSession

    if cfg.spark.master.startswith("local"):
        # a hostname that resolves to a non-loopback address makes local Spark warn and sometimes bind badly
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName("pctr")
    for key, value in spark_conf(cfg).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def stop_spark() -> None:
    """Stop this process's Spark session and its JVM, returning the JVM's memory to the machine.

    ``SparkSession.stop()`` alone leaves the py4j gateway JVM running with its heap; that JVM exits
    when its stdin closes (PySpark's gateway server watches it), so close it and wait.
    """
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
