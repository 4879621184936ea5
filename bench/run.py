"""``make bench``: throughput and latency of the pipeline's hot spots, as JSON under ``bench/results/``.

Measured on fresh homes (``PCTR_HOME`` is ignored: temporary directories are used):
- at ``--throughput-scale`` (medium: 10M impressions a day): simulation and Spark join rows/s, the
  feature job's seconds and Feast historical retrieval rows/s (part ``throughput``); and one day's
  join, features, training set and training, each in a process of its own with its seconds and peak
  memory (part ``medium_day``);
- at ``--scale``: the seconds of every data stage, Feast historical retrieval rows/s (file, duckdb,
  Spark offline stores) and online read latency (sqlite, Redis), training examples/s with 1 and 2
  Horovod processes (with the peak memory of the train stage's processes), ranker SavedModel latency for
  1,000 candidates, and the ranking service's latency for one /v1/rank request (in process: Feast
  online read, user tower, FAISS, ranker, auction).
Peak memory is the summed RSS of a step's process tree (``core.resources.PeakMemory``). Every results
file records the machine, the git commit and the date. Seconds, not instructions: run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.config import PctrConfig, load_config
from core.io import write_json_atomic
from core.layout import ds_range, shift_ds
from core.resources import MIB, PeakMemory

RESULTS = Path(__file__).resolve().parent / "results"
REDIS = f"127.0.0.1:{os.environ.get('PCTR_TEST_REDIS_PORT', '6390')}"  # started by `make redis`
START = "2026-11-01"
# the default driver heap fits a small day; a medium day (10M impressions) needs more in local mode
THROUGHPUT_DRIVER_MEMORY = "8g"


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
        "mean_ms": round(float(arr.mean()), 3),
        "n": len(arr),
    }


def _simulate(cfg: PctrConfig, scale: str, days: int) -> dict[str, Any]:
    from simulator import logs

    started = time.time()
    rows = logs.run(cfg, start=START, days=days, scale=scale)["rows"]["impressions"]
    seconds = time.time() - started
    return {"impressions": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds, 1)}


def bench_throughput(scale: str, max_entity_rows: int = 100_000) -> dict[str, Any]:
    """At ``scale``: simulator and Spark join rows/s, the feature job's seconds and Feast historical retrieval.

    Three simulated days: the join of a day needs the next day's clicks; the features of the first
    day serve the retrieval of the second day's joined rows (point in time, as training sets do).
    """
    from pyspark.sql import SparkSession

    from core.layout import Layout
    from jobs import build_features, join_logs
    from jobs.training_set import entity_rows

    active = SparkSession.getActiveSession()
    if active is not None:  # a fresh session, sized by this run's configuration
        active.stop()
    first, second = ds_range(START, 2)
    with tempfile.TemporaryDirectory(prefix="pctr-bench-") as home:
        cfg = load_config(home=home)
        cfg.spark.driver_memory = THROUGHPUT_DRIVER_MEMORY
        out: dict[str, Any] = {"scale": scale, "spark_driver_memory": cfg.spark.driver_memory}
        out["simulate"] = _simulate(cfg, scale, days=3)
        out["join"] = []
        for ds in (first, second):
            stats = join_logs.run(cfg, ds)
            out["join"].append({
                "ds": ds,
                "input_impressions": stats["input_impressions"],
                "seconds": stats["seconds"],
                "rows_per_second": round(stats["input_impressions"] / stats["seconds"], 1),
            })  # fmt: skip
        features = build_features.run(cfg, first)
        out["build_features"] = {"seconds": features["seconds"], "rows": features["rows"]}
        entities = entity_rows(Layout(cfg.home), "joined", [second]).head(max_entity_rows)
        out["feast_historical"] = bench_historical(cfg, entities)
    return out


def bench_daily_stages(cfg: PctrConfig, scale: str, days: int) -> dict[str, Any]:
    """Seconds of every data stage per day, in the order a daily run needs them."""
    from entrypoints.local_runner import run_day

    out: dict[str, Any] = {"simulate": _simulate(cfg, scale, days)}
    for ds in ds_range(START, days - 1):
        report = run_day(cfg, ds, until="materialize", log=lambda _: None)
        out.setdefault("stage_seconds", {})[ds] = {k: v["seconds"] for k, v in report["stages"].items()}
    return out


def bench_training(cfg: PctrConfig, ds: str) -> dict[str, Any]:
    """The ranker's training throughput with 1 and 2 Horovod processes on the same training set.

    ``peak_rss_mib`` is the summed RSS of the ``pctr train`` process, horovodrun and its workers.
    """
    from jobs.pipeline import run_stage

    run_stage(cfg, "training_set", ds)
    out = {}
    for num_proc in (1, 2):
        variant = cfg.model_copy(deep=True)
        variant.train.num_proc = num_proc
        measured = measure_cli(variant, "train", "--ds", ds)
        out[f"np{num_proc}"] = {
            "examples_per_second": measured["stats"]["examples_per_second"],
            "ranker_seconds": measured["stats"]["ranker_seconds"],
            "peak_rss_mib": measured["peak_rss_mib"],
        }
    return out


def config_env(cfg: PctrConfig) -> dict[str, str]:
    """``PCTR_*`` variables that make ``load_config()`` in another process return ``cfg`` (sections as JSON)."""
    env = {}
    for name, value in cfg.model_dump(mode="json").items():
        env[f"PCTR_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def measure_cli(cfg: PctrConfig, *args: str) -> dict[str, Any]:
    """Run ``pctr ARGS --json`` under ``cfg`` in a process of its own: its summary, wall seconds and peak memory.

    A process of its own, as an Airflow task runs a stage: the peak (summed RSS of that process and its
    descendants: a Spark JVM, horovodrun's workers, sampled every 0.2 s) is the step's alone. The
    caller's ``PCTR_*`` variables are replaced by ``cfg``'s, which already includes them. The process's
    own peak as the kernel counted it (``wait4``'s maximum RSS) bounds the figure from below: a step
    shorter than the sampling interval is measured too.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCTR_")} | config_env(cfg)
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", *args, "--json"], env=env, stdout=subprocess.PIPE, text=True
    )
    with PeakMemory(proc.pid, interval=0.2) as memory:
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"pctr {' '.join(args)} exited {proc.returncode} (its error is above)")
    return {
        "stats": json.loads(stdout.strip().splitlines()[-1]),
        "seconds": round(time.time() - started, 2),
        "peak_rss_mib": max(memory.peak_mib, usage.ru_maxrss * 1024 / MIB),  # ru_maxrss is in KiB on Linux
    }


def bench_one_day(scale: str) -> dict[str, Any]:
    """Seconds and peak memory of one day at ``scale`` through join, features, training set and training.

    Each step runs as ``pctr ...`` in a process of its own (``measure_cli``). Training a day takes a run
    whose train split is that day: with ``history_days=1`` the run closing ``day+2`` trains on ``day``,
    validates on ``day+1`` and holds out ``day+2``, so those days are joined too (not reported as the
    day's steps) and four days are simulated (a day's join needs the next day's clicks).
    """
    day = START
    days = ds_range(day, 4)
    run_ds = shift_ds(day, 2)
    with tempfile.TemporaryDirectory(prefix="pctr-bench-") as home:
        cfg = load_config(home=home)
        cfg.spark.driver_memory = THROUGHPUT_DRIVER_MEMORY
        cfg.train.history_days = 1
        out: dict[str, Any] = {"scale": scale, "day": day, "run_ds": run_ds, "num_proc": cfg.train.num_proc}
        simulated = measure_cli(cfg, "simulate", "--start", day, "--days", str(len(days)), "--scale", scale)
        out["simulate_4_days"] = _step(simulated, rows=simulated["stats"]["rows"]["impressions"])
        joined = measure_cli(cfg, "join-logs", "--ds", day)
        out["join_logs"] = _step(joined, input_impressions=joined["stats"]["input_impressions"])
        features = measure_cli(cfg, "build-features", "--ds", day)
        out["build_features"] = _step(features, rows=features["stats"]["rows"])
        out["other_joins"] = {ds: _step(measure_cli(cfg, "join-logs", "--ds", ds)) for ds in days[1:3]}
        training_set = measure_cli(cfg, "training-set", "--ds", run_ds)
        out["training_set"] = _step(training_set, splits=training_set["stats"]["splits"])
        trained = measure_cli(cfg, "train", "--ds", run_ds)
        train_stats = trained["stats"]
        out["train"] = _step(
            trained,
            **{k: train_stats[k] for k in ("examples_per_second", "ranker_seconds")},
            baseline_seconds=train_stats["baseline"]["seconds"],
        )
    return out


def _step(measured: dict[str, Any], **details: Any) -> dict[str, Any]:
    """One step's record: wall seconds (process start included), the stage's own seconds, peak memory."""
    return {
        "seconds": measured["seconds"],
        "stage_seconds": measured["stats"].get("seconds"),
        "peak_rss_mib": measured["peak_rss_mib"],
        **details,
    }


def bench_historical(cfg: PctrConfig, entities: Any) -> dict[str, Any]:
    """Rows/s of Feast's ``get_historical_features`` (service ranker_v1) per offline store, as the training set
    retrieves them (``jobs.training_set.retrieve``: through Parquet files on Spark)."""
    from feature_repo.store import feature_store
    from jobs.training_set import retrieve
    from models.features import RANKER_SERVICE

    out: dict[str, Any] = {"entity_rows": len(entities)}
    for offline in ("file", "duckdb", "spark"):
        variant = cfg.model_copy(deep=True)
        variant.features.offline_store = offline
        store = feature_store(variant, apply=True)
        started = time.perf_counter()
        service = store.get_feature_service(RANKER_SERVICE)
        with tempfile.TemporaryDirectory() as scratch:
            rows = len(retrieve(variant, store, service, entities, Path(scratch) / "retrieve"))
        seconds = time.perf_counter() - started
        out[offline] = {"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds, 1)}
    return out


def bench_feature_store(cfg: PctrConfig, ds: str, max_rows: int = 20_000, calls: int = 200) -> dict[str, Any]:
    """Feast: historical retrieval rows/s per offline store, online read latency per online store."""
    from core.layout import Layout, feature_window
    from feature_repo.definitions import view_refs
    from feature_repo.store import feature_store
    from jobs.training_set import entity_rows, split_days

    layout = Layout(cfg.home)
    kind, days = split_days(cfg, ds)["train"]
    entities = entity_rows(layout, kind, days).head(max_rows)
    out: dict[str, Any] = {"historical": bench_historical(cfg, entities), "online": {}}

    users = entities["user_id"].drop_duplicates().head(calls).tolist()
    ads = entities["ad_id"].drop_duplicates().head(1000).tolist()
    user_refs, ad_refs = view_refs("user"), view_refs("ad")
    for online in ("sqlite", "redis"):
        variant = cfg.model_copy(deep=True)
        variant.features.online_store = online
        variant.features.redis_connection = REDIS
        store = feature_store(variant, apply=True)
        if online == "redis":
            start, end = feature_window(ds, cfg.feature_delay)
            store.materialize(start_date=start, end_date=end)
        one_user, thousand_ads = [], []
        for user in users:
            t = time.perf_counter()
            store.get_online_features(features=user_refs, entity_rows=[{"user_id": user}]).to_dict()
            one_user.append((time.perf_counter() - t) * 1000)
        for _ in range(20):
            t = time.perf_counter()
            store.get_online_features(features=ad_refs, entity_rows=[{"ad_id": a} for a in ads]).to_dict()
            thousand_ads.append((time.perf_counter() - t) * 1000)
        out["online"][online] = {"one_user": _percentiles(one_user), f"{len(ads)}_ads": _percentiles(thousand_ads)}
        if online == "redis":
            store.teardown()
    return out


def bench_serving(cfg: PctrConfig, ds: str, requests: int = 300) -> dict[str, Any]:
    """Latency of the published bundle: the ranker on 1,000 candidates, and one /v1/rank request."""
    from fastapi.testclient import TestClient

    from core.bundle import current_bundle_dir
    from core.layout import Layout
    from jobs.pipeline import run_stage
    from jobs.training_set import load_split
    from models.predictor import Predictor
    from serving.app import create_app

    for stage in ("calibrate", "evaluate", "train_retrieval", "register", "publish"):
        run_stage(cfg, stage, ds)
    bundle = current_bundle_dir(Layout(cfg.home))
    predictor = Predictor.load(bundle / "ranker", bundle / "calibrator.json")
    holdout = load_split(cfg, ds, "holdout")
    batch = holdout.sample(n=1000, replace=len(holdout) < 1000, random_state=0).reset_index(drop=True)
    predictor.predict(batch)  # warm-up traces the graph
    ranker_ms = []
    for _ in range(50):
        t = time.perf_counter()
        predictor.predict(batch)
        ranker_ms.append((time.perf_counter() - t) * 1000)

    users = holdout["user_id"].drop_duplicates().head(requests).tolist()
    context = {"placement": "feed", "device": "ios", "os": "ios", "country": "US"}
    rank_ms = []
    with TestClient(create_app(cfg)) as client:
        for _ in range(60):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(1.0)
        client.post("/v1/rank", json={"user_id": users[0], "context": context, "slots": 3})
        for user in users:
            t = time.perf_counter()
            response = client.post("/v1/rank", json={"user_id": user, "context": context, "slots": 3})
            rank_ms.append((time.perf_counter() - t) * 1000)
            response.raise_for_status()
    return {
        "ranker_1000_candidates": _percentiles(ranker_ms),
        "rank_request": {**_percentiles(rank_ms), "retrieval_k": cfg.serving.retrieval_k},
    }


PARTS = ("pipeline", "throughput", "medium_day")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--throughput-scale", default="medium", help="scale of the simulate/join/features run and of the one-day run"
    )
    parser.add_argument("--scale", default="small", help="scale of the pipeline run (training, serving)")
    # ten days train on seven, as the daily run does: on two, per-epoch costs dominate the measured rate
    parser.add_argument("--days", type=int, default=10, help="simulated days of the pipeline run")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}; the file keeps "
        "the other parts' earlier figures (`parts` records when and at which commit each part was measured)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    path = RESULTS / f"bench-{args.throughput_scale}-{args.scale}.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() and len(parts) < len(PARTS) else {}
    result.update(scale=args.scale, **run_info())
    if "pipeline" in parts:
        _start_part(result, "pipeline")
        result.update(days=args.days, started_at=result["parts"]["pipeline"]["started_at"])
        bench_pipeline(args.scale, args.days, result, path)
    if "throughput" in parts:
        _start_part(result, "throughput")
        started_at = result["parts"]["throughput"]["started_at"]
        result["throughput"] = {**bench_throughput(args.throughput_scale), "started_at": started_at}
        write_json_atomic(path, result)
    if "medium_day" in parts:
        _start_part(result, "medium_day")
        result["medium_day"] = bench_one_day(args.throughput_scale)
        write_json_atomic(path, result)
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"written to {path}")
    return 0


def bench_pipeline(scale: str, days: int, result: dict[str, Any], path: Path) -> None:
    """The ``pipeline`` part, written to ``path`` after each of its measurements."""
    with tempfile.TemporaryDirectory(prefix="pctr-bench-") as home:
        cfg = load_config(home=home)
        cfg.train.history_days = days - 3
        ds = ds_range(START, days)[-2]
        for name, measure in (
            ("data", lambda: bench_daily_stages(cfg, scale, days)),
            ("feature_store", lambda: bench_feature_store(cfg, ds)),
            ("training", lambda: bench_training(cfg, ds)),
            ("serving", lambda: bench_serving(cfg, ds)),
        ):
            result[name] = measure()
            write_json_atomic(path, result)  # what was measured survives a later failure


def run_info() -> dict[str, Any]:
    """The machine (cores, memory, Python), the checkout's commit (``dirty``: uncommitted changes) and the date."""
    import psutil

    from core.tracking import git_state

    return {
        "machine": {
            "cpus": os.cpu_count(),
            "memory_mib": round(psutil.virtual_memory().total / MIB),
            "python": platform.python_version(),
        },
        "git": git_state(),
        "date": _now(),
    }


def _start_part(result: dict[str, Any], part: str) -> None:
    """Record when and at which commit ``part`` is measured (the file may keep other parts from other runs)."""
    result.setdefault("parts", {})[part] = {"started_at": _now(), "git": result["git"]}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


if __name__ == "__main__":
    raise SystemExit(main())
