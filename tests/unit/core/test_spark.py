from __future__ import annotations

import sys
from pathlib import Path

from core.config import PctrConfig, SparkConfig
from core.spark import spark_conf


def _conf(master: str, **conf: str) -> dict[str, str]:
    return spark_conf(PctrConfig(home=Path("/h"), spark=SparkConfig(master=master, conf=conf)))


def test_local_sessions_get_no_cluster_settings() -> None:
    conf = _conf("local[2]")
    assert conf["spark.master"] == "local[2]" and conf["spark.sql.session.timeZone"] == "UTC"
    assert not {"spark.pyspark.python", "spark.driver.host", "spark.driver.bindAddress"} & set(conf)


def test_a_loopback_master_gets_this_interpreter_and_a_loopback_driver() -> None:
    for master in ("spark://127.0.0.1:7077", "spark://localhost:17077"):
        conf = _conf(master)
        assert conf["spark.pyspark.python"] == sys.executable
        assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"


def test_a_remote_master_keeps_spark_driver_address_and_config_overrides_last() -> None:
    overrides = {"spark.pyspark.python": "/opt/py", "spark.sql.shuffle.partitions": "64"}
    conf = _conf("spark://spark-master:7077", **overrides)
    assert "spark.driver.host" not in conf
    assert (conf["spark.pyspark.python"], conf["spark.sql.shuffle.partitions"]) == ("/opt/py", "64")
