"""The Spark stages on a standalone cluster (the cluster profile, ``conf/cluster.toml``) write what local mode writes.

On a copy of the demo's home, the closed day's join, joined-rows gate, features and training set are run
again, first in local mode as the demo ran them, then with the profile's Spark settings against a master and
two workers on loopback (``entrypoints.spark_cluster``), Feast's offline store on Spark there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.config import PctrConfig, load_config
from core.io import read_json
from core.layout import Layout
from entrypoints.airflow_local import REPO, free_port
from entrypoints.spark_cluster import StandaloneCluster
from jobs.pipeline import run_stage
from models.features import FEATURE_ENTITIES

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

STAGES = ("join_logs", "validate_joined", "build_features", "training_set")


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    directory = tmp_path_factory.mktemp("spark-cluster")
    with StandaloneCluster(directory, port=free_port(), webui_port=free_port()) as cluster:
        yield cluster


def _run_stages(cfg: PctrConfig, ds: str) -> dict[str, float]:
    """Run ``STAGES`` of ds in one Spark application, as ``pctr run-day`` does; the seconds of each."""
    seconds = {}
    for i, name in enumerate(STAGES):
        started = time.perf_counter()
        run_stage(cfg, name, ds, keep_spark=i < len(STAGES) - 1)
        seconds[name] = round(time.perf_counter() - started, 1)
    return seconds


def _outputs(
    cfg: PctrConfig,
    ds: str,
    partition_digests: Callable[[Path, str], dict[str, str]],
    parquet_digest: Callable[[Path], str],
) -> dict[str, object]:
    layout = Layout(cfg.home)
    join = read_json(layout.joined(ds) / "_stats.json")
    return {
        "partitions": partition_digests(cfg.home, ds),
        # its checksum and counts: not its time, nor its paths (the demo's home was copied)
        "join": {key: value for key, value in join.items() if key != "seconds" and not key.endswith("_path")},
        "training_set": parquet_digest(layout.training_set(ds)),
    }


def test_the_spark_stages_write_on_a_standalone_cluster_what_they_write_locally(
    spark_cluster: StandaloneCluster,
    copied_home: Path,
    demo_env: dict[str, str],
    partition_digests: Callable[[Path, str], dict[str, str]],
    parquet_digest: Callable[[Path], str],
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    ds = read_json(copied_home / "demo" / "summary.json")["ds"]
    for key, value in {"PCTR_HOME": str(copied_home), **demo_env}.items():
        monkeypatch.setenv(key, value)
    local = load_config()
    demo = _outputs(local, ds, partition_digests, parquet_digest)
    assert local.spark.master.startswith("local") and local.features.offline_store == "duckdb"
    assert {"joined", "labelled", "eval_sample"} <= {p.split("/")[0] for p in demo["partitions"]}
    assert {p for p in demo["partitions"] if p.startswith("features/")} == {
        f"features/{entity}/dt={ds}" for entity in FEATURE_ENTITIES
    }

    local_seconds = _run_stages(local, ds)
    assert _outputs(local, ds, partition_digests, parquet_digest) == demo  # a rerun is a fair reference

    monkeypatch.setenv("PCTR_CONFIG", str(REPO / "conf" / "cluster.toml"))
    monkeypatch.setenv("PCTR_SPARK__MASTER", spark_cluster.master_url)
    monkeypatch.setenv("PCTR_FEATURES__ONLINE_STORE", "sqlite")  # Feast's apply would reach for the profile's Redis
    cluster = load_config()
    assert (cluster.spark.conf["spark.cores.max"], cluster.features.offline_store) == ("2", "spark")
    assert not spark_cluster.status()["completedapps"]
    cluster_seconds = _run_stages(cluster, ds)
    assert _outputs(cluster, ds, partition_digests, parquet_digest) == demo

    # the application ran on the cluster, with a task or more on each worker's executor
    apps = spark_cluster.status()["completedapps"]
    assert [(app["name"], app["state"], app["cores"]) for app in apps] == [("pctr", "FINISHED", 2)]
    for worker in sorted((spark_cluster.directory / "work").iterdir()):
        logs = list((worker / apps[0]["id"]).glob("*/stderr"))
        assert any("Finished task" in log.read_text() for log in logs), worker

    record_property("local_seconds", local_seconds)
    record_property("cluster_seconds", cluster_seconds)
    print(f"\nseconds of {ds}'s stages: local {local_seconds}, standalone cluster {cluster_seconds}")
