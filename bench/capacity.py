"""The capacity model: Redis bytes of the Feast online store, measured, and the projection to the design's scale.

- ``redis``: the newest day's feature files of a home (``--home``) are materialised by the real Feast into
  a redis-server of this run's own (loopback, free port, no persistence), one view at a time; the
  growth of ``INFO memory``'s ``used_memory`` over the rows loaded is each view's bytes per row, and
  ``MEMORY USAGE`` of a sample of its keys the same figure key by key. Also the rows per second of
  each materialisation (one process).
- ``projection``: the measured figures of ``bench/results/`` (this file's ``redis``, the medium day of
  ``bench-medium-small.json``, ``serving.json``'s ``per_core``) projected to ``TARGET`` with
  ``ASSUMPTIONS``: Spark executor-hours a day, Horovod workers for a daily train, serving cores,
  Redis memory. Every input is recorded with the file and key it comes from (``docs/scaling.md``).

``python -m bench.capacity --home H [--parts redis,projection]`` writes ``bench/results/capacity.json``;
a subset of parts keeps the other's earlier figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.run import run_info
from core.config import JoinConfig, SimulationConfig, TrainConfig, load_config
from core.io import write_json_atomic
from core.layout import Layout, feature_window
from models.features import CATEGORY_KEY, FEATURE_ENTITIES

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "capacity.json"
HOST = "127.0.0.1"
SAMPLE_KEYS = 2_000  # keys per view whose MEMORY USAGE is read
PARTS = ("redis", "projection")
_, _SMALL_ADS, _SMALL_ADVERTISERS, _ = SimulationConfig().scales["small"]


@dataclass(frozen=True)
class Target:
    """The design's scale: 10B impressions a day over 100M users and 10M ads, 100k ranking requests a second."""

    impressions_per_day: float = 10e9
    users: float = 100e6
    ads: float = 10e6
    qps: float = 100_000.0
    candidates: int = 1_000
    p99_ms: float = 100.0


@dataclass(frozen=True)
class Assumptions:
    """What the projection takes as given rather than measured; each is stated in docs/scaling.md."""

    ctr: float = SimulationConfig().base_ctr  # the design's ~1-2%
    neg_rate: float = JoinConfig().neg_rate  # negatives kept by the join
    train_days: int = TrainConfig().history_days  # days of joined rows in a daily train
    epochs: float = 1.0  # passes over them (train.epochs = 6 is the ceiling; early stopping ends sooner)
    train_hours: float = 2.0  # the daily train's deadline
    batch_hours: float = 2.0  # the deadline of the join and of the feature job, each
    serving_headroom: float = 1.5  # serving cores for 1.5x the target QPS (peaks, a zone or a rollout down)
    redis_headroom: float = 1.5  # Redis memory for 1.5x the data (fragmentation, replication, snapshot fork)
    ads_per_advertiser: float = _SMALL_ADS / _SMALL_ADVERTISERS  # of the small simulated world


# ---- the projection: pure arithmetic on cited inputs ----


def training_rows_per_day(impressions: float, ctr: float, neg_rate: float) -> float:
    """Joined training rows of a day: every positive, negatives at ``neg_rate``."""
    return impressions * (ctr + (1.0 - ctr) * neg_rate)


def project(measured: Mapping[str, float], target: Target = Target(), assume: Assumptions = Assumptions()) -> dict:
    """Project per-core figures to ``target``. ``measured`` (all per core or per row, see ``inputs``):

    join_rows_per_core_s, features_rows_per_core_s (impressions of the day per second per core),
    train_examples_per_worker_s (one-core Horovod worker), serving_qps_per_core (at ``target.candidates``
    and p99 under ``target.p99_ms``), serving_p99_ms (at that load), redis_bytes_user, redis_bytes_ad,
    redis_bytes_advertiser, redis_bytes_user_category, user_category_rows_per_user, categories (the
    most user x category rows a user can have), materialize_rows_per_s (one process),
    training_set_rows_per_core_s (rows of the training set's splits per second per core).
    """
    day_s = 86_400.0
    spark = {}
    for stage in ("join", "features"):
        core_hours = target.impressions_per_day / measured[f"{stage}_rows_per_core_s"] / 3600.0
        spark[stage] = {
            "executor_core_hours_per_day": round(core_hours, 1),
            "executor_cores_within_deadline": math.ceil(core_hours / assume.batch_hours),
        }
    spark["total_executor_core_hours_per_day"] = round(
        spark["join"]["executor_core_hours_per_day"] + spark["features"]["executor_core_hours_per_day"], 1
    )

    rows_day = training_rows_per_day(target.impressions_per_day, assume.ctr, assume.neg_rate)
    examples = rows_day * assume.train_days * assume.epochs
    needed_rate = examples / (assume.train_hours * 3600.0)
    training = {
        "rows_per_day": round(rows_day),
        "training_set_core_hours": round(
            rows_day * assume.train_days / measured["training_set_rows_per_core_s"] / 3600.0, 1
        ),
        "examples_per_train": round(examples),
        "examples_per_second_needed": round(needed_rate),
        "workers": math.ceil(needed_rate / measured["train_examples_per_worker_s"]),
        "hours_on_one_worker": round(examples / measured["train_examples_per_worker_s"] / 3600.0, 1),
    }

    cores = math.ceil(target.qps * assume.serving_headroom / measured["serving_qps_per_core"])
    serving = {
        "cores": cores,
        "cores_without_headroom": math.ceil(target.qps / measured["serving_qps_per_core"]),
        "p99_ms_per_core_at_that_load": measured["serving_p99_ms"],
        "average_impression_rate_per_s": round(target.impressions_per_day / day_s),
    }

    advertisers = target.ads / assume.ads_per_advertiser
    user_category_rows = target.users * measured["user_category_rows_per_user"]
    gib = 2.0**30
    parts = {
        "user": target.users * measured["redis_bytes_user"],
        "ad": target.ads * measured["redis_bytes_ad"],
        "advertiser": advertisers * measured["redis_bytes_advertiser"],
        "user_category": user_category_rows * measured["redis_bytes_user_category"],
    }
    data = sum(parts.values())
    rows_online = target.users + target.ads + advertisers + user_category_rows
    every_category = (
        data
        + target.users
        * (measured["categories"] - measured["user_category_rows_per_user"])
        * (measured["redis_bytes_user_category"])
    )
    redis = {
        "gib": {name: round(value / gib, 1) for name, value in parts.items()},
        "data_gib": round(data / gib, 1),
        "provisioned_gib": round(data * assume.redis_headroom / gib, 1),
        "data_gib_every_category": round(every_category / gib, 1),
        "provisioned_gib_every_category": round(every_category * assume.redis_headroom / gib, 1),
        "rows": {"advertiser": round(advertisers), "user_category": round(user_category_rows)},
        "materialize_hours_one_process": round(rows_online / measured["materialize_rows_per_s"] / 3600.0, 1),
    }
    return {"spark": spark, "training": training, "serving": serving, "redis": redis}


def projection_inputs(capacity: Mapping[str, Any], results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Every measured input of ``project``: its value, and the file and key (dotted path) it is computed from.

    ``capacity``: this bench's results (``redis``); the others are read from ``results``.
    """
    bench = json.loads((results / "bench-medium-small.json").read_text())
    serving = json.loads((results / "serving.json").read_text())
    cpus = bench["machine"]["cpus"]
    day = bench["medium_day"]
    joins = [day["join_logs"]["stage_seconds"], *(d["stage_seconds"] for d in day["other_joins"].values())]
    impressions = day["join_logs"]["input_impressions"]
    train_workers = day["num_proc"]
    per_core = serving.get("per_core", {})
    if "qps_within_p99_target" not in per_core:
        raise ValueError(f"{results / 'serving.json'} has no per_core figure: `python -m bench.serving --home H "
                         "--parts per_core` measures it (2 cores or more)")  # fmt: skip
    redis = capacity["redis"]["views"]
    medium = "bench-medium-small.json"
    inputs = {
        "join_rows_per_core_s": {
            "value": round(impressions / (max(joins) * cpus), 1),
            "from": f"{medium}: medium_day.join_logs.input_impressions / (slowest of medium_day.join_logs and "
            "medium_day.other_joins.*.stage_seconds x machine.cpus)",
        },
        "features_rows_per_core_s": {
            "value": round(impressions / (day["build_features"]["stage_seconds"] * cpus), 1),
            "from": f"{medium}: medium_day.join_logs.input_impressions / "
            "(medium_day.build_features.stage_seconds x machine.cpus)",
        },
        "train_examples_per_worker_s": {
            "value": round(day["train"]["examples_per_second"] / train_workers, 1),
            "from": f"{medium}: medium_day.train.examples_per_second / medium_day.num_proc (one core a worker)",
        },
        "serving_qps_per_core": {
            "value": per_core["qps_within_p99_target"],
            "from": "serving.json: per_core.qps_within_p99_target (one worker on one core, retrieval_k 1,000)",
        },
        "serving_p99_ms": {
            "value": per_core["p99_ms_within_target"],
            "from": "serving.json: per_core.p99_ms_within_target",
        },
        "user_category_rows_per_user": {
            "value": round(redis["user_category"]["rows"] / redis["user"]["rows"], 2),
            "from": "capacity.json: redis.views.user_category.rows / redis.views.user.rows",
        },
        "categories": {
            "value": capacity["redis"]["views"]["user_category"]["categories"],
            "from": "capacity.json: redis.views.user_category.categories",
        },
        "training_set_rows_per_core_s": {
            "value": round(sum(s["rows"] for s in day["training_set"]["splits"].values())
                           / (day["training_set"]["stage_seconds"] * cpus), 1),
            "from": f"{medium}: sum of medium_day.training_set.splits.*.rows / "
            "(medium_day.training_set.stage_seconds x machine.cpus)",
        },
        "materialize_rows_per_s": {
            "value": capacity["redis"]["rows_per_second"],
            "from": "capacity.json: redis.rows_per_second (all views, one process)",
        },
    }  # fmt: skip
    for entity in FEATURE_ENTITIES:
        inputs[f"redis_bytes_{entity}"] = {
            "value": redis[entity]["bytes_per_row"],
            "from": f"capacity.json: redis.views.{entity}.bytes_per_row",
        }
    return inputs


def projection(capacity: Mapping[str, Any], results: Path = RESULTS) -> dict[str, Any]:
    """The projection of the measured figures with the default target and assumptions."""
    inputs = projection_inputs(capacity, results)
    measured = {name: float(entry["value"]) for name, entry in inputs.items()}
    return {
        "target": asdict(Target()),
        "assumptions": asdict(Assumptions()),
        "inputs": inputs,
        "result": project(measured),
        "result_six_epochs": project(measured, assume=Assumptions(epochs=6))["training"],
    }


# ---- the Redis measurement ----


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[int]:
    """A redis-server of this run's own on a free loopback port (no persistence); its port. Stopped after."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed: `make redis` (.ci/redis.sh) installs it")
    import redis

    port = _free_port()
    process = subprocess.Popen(
        [server, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no", "--logfile", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host=HOST, port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"redis-server did not answer on {HOST}:{port}")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def newest_feature_day(home: Path) -> str:
    """The newest ds for which ``home`` has the feature files of every entity."""
    layout = Layout(home)
    days = [
        {p.parent.name.removeprefix("dt=") for p in layout.features(e).glob("dt=*/features.parquet")}
        for e in FEATURE_ENTITIES
    ]
    common = set.intersection(*days) if days else set()
    if not common:
        raise FileNotFoundError(f"{home} has no day with the feature files of every entity ({FEATURE_ENTITIES})")
    return max(common)


def feature_days(home: Path, entity: str, ds: str) -> int:
    """How many days of ``entity``'s feature files ``home`` holds up to ``ds``: the history its windows saw."""
    return sum(1 for p in Layout(home).features(entity).glob("dt=*/features.parquet") if p.parent.name[3:] <= ds)


def measure_redis(home: Path, sample_keys: int = SAMPLE_KEYS) -> dict[str, Any]:
    """Bytes per row of every view in Feast's Redis online store, from the newest feature day of ``home``."""
    import pyarrow.parquet as pq
    import redis

    from feature_repo.definitions import view_name
    from feature_repo.store import feature_store

    ds = newest_feature_day(home)
    source = Layout(home)
    with tempfile.TemporaryDirectory(prefix="pctr-bench-capacity-") as scratch, private_redis() as port:
        cfg = load_config(home=scratch)
        cfg.features.online_store = "redis"
        cfg.features.redis_connection = f"{HOST}:{port}"
        layout = Layout(cfg.home)
        rows = {}
        for entity in FEATURE_ENTITIES:
            target = layout.features(entity, ds) / "features.parquet"
            target.parent.mkdir(parents=True)
            shutil.copyfile(source.features(entity, ds) / "features.parquet", target)
            rows[entity] = pq.read_metadata(target).num_rows
        store = feature_store(cfg, apply=True)
        start, end = feature_window(ds, cfg.feature_delay)
        client = redis.Redis(host=HOST, port=port)
        rng = random.Random(0)
        views: dict[str, Any] = {}
        categories = len(set(pq.read_table(layout.features("user_category", ds) / "features.parquet",
                                           columns=[CATEGORY_KEY]).column(CATEGORY_KEY).to_pylist()))  # fmt: skip
        known: set[bytes] = set()
        for entity in FEATURE_ENTITIES:
            before = int(client.info("memory")["used_memory"])
            started = time.perf_counter()
            store.materialize(start_date=start, end_date=end, feature_views=[view_name(entity)])
            seconds = time.perf_counter() - started
            after = int(client.info("memory")["used_memory"])
            keys = [k for k in client.scan_iter(count=10_000) if k not in known]
            known.update(keys)
            sample = rng.sample(keys, min(sample_keys, len(keys)))
            usage = [int(client.memory_usage(k, samples=0)) for k in sample]
            fields = [int(client.hlen(k)) for k in sample[:100]]
            views[entity] = {
                "rows": rows[entity],
                "keys": len(keys),
                "used_memory_delta": after - before,
                "bytes_per_row": round((after - before) / rows[entity], 1),
                "memory_usage_mean": round(sum(usage) / len(usage), 1),
                "memory_usage_sampled_keys": len(usage),
                "hash_fields": max(fields),
                "encoding": client.object("encoding", sample[0]).decode(),
                "seconds": round(seconds, 2),
                "rows_per_second": round(rows[entity] / seconds, 1),
            }
        views["user_category"]["categories"] = categories
        server = client.info("server")
        config = client.config_get("hash-max-listpack-*")
    total_rows = sum(v["rows"] for v in views.values())
    return {
        "home": str(home),
        "ds": ds,
        "feature_days": feature_days(home, "user_category", ds),
        "redis_version": server["redis_version"],
        "hash_config": config,
        "views": views,
        "rows_per_second": round(total_rows / sum(v["seconds"] for v in views.values()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a pctr home with feature files (the redis part)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"a subset of {','.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}")
    if "redis" in parts and args.home is None:
        parser.error("the redis part needs --home")
    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    info = run_info()
    result.update(info)
    for part in parts:
        result.setdefault("parts", {})[part] = {"date": info["date"], "git": info["git"]}
        if part == "redis":
            result["redis"] = measure_redis(args.home.resolve())
        else:
            result["projection"] = projection(result)
        write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
