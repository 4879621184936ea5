"""``make bench``: throughput and latency of the pipeline's hot spots, as JSON under ``bench/results/``.

Measured on a fresh home (``PCTR_HOME`` is ignored: a temporary directory is used) at the chosen
scale: simulation and Spark join rows/s, training examples/s with 1 and 2 Horovod processes (with
peak resident memory), ranker SavedModel latency for 1,000 candidates, and the ranking service's
latency for one /v1/rank request (in process: Feast online read, user tower, FAISS, ranker, auction).
Seconds, not instructions: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.config import PctrConfig, load_config
from jobs.layout import ds_range

RESULTS = Path(__file__).resolve().parent / "results"
START = "2026-11-01"


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
        "mean_ms": round(float(arr.mean()), 3),
        "n": len(arr),
    }


def bench_data(cfg: PctrConfig, scale: str, days: int) -> dict[str, Any]:
    """Simulator and Spark stages, in the order a daily run needs them."""
    from jobs import simulate
    from jobs.pipeline import run_day

    started = time.time()
    sim = simulate.run(cfg, start=START, days=days, scale=scale)
    sim_seconds = time.time() - started
    out: dict[str, Any] = {
        "simulate": {
            "impressions": sim["rows"]["impressions"],
            "seconds": round(sim_seconds, 2),
            "rows_per_second": round(sim["rows"]["impressions"] / sim_seconds, 1),
        }
    }
    joins = []
    for ds in ds_range(START, days - 1):
        report = run_day(cfg, ds, until="materialize", log=lambda _: None)
        joins.append(report["join_logs"])
        out.setdefault("stage_seconds", {})[ds] = {k: v["seconds"] for k, v in report["stages"].items()}
    total_rows = sum(j["input_impressions"] for j in joins)
    total_seconds = sum(j["seconds"] for j in joins)
    out["join"] = {
        "input_impressions": total_rows,
        "seconds": round(total_seconds, 2),
        "rows_per_second": round(total_rows / total_seconds, 1),
    }
    return out


def bench_training(cfg: PctrConfig, ds: str) -> dict[str, Any]:
    """The ranker's training throughput with 1 and 2 Horovod processes on the same training set."""
    import psutil

    from jobs.pipeline import run_stage

    run_stage(cfg, "training_set", ds)
    out = {}
    for num_proc in (1, 2):
        cfg.train.num_proc = num_proc
        peak = _PeakMemory(psutil)
        with peak:
            stats = run_stage(cfg, "train", ds)
        out[f"np{num_proc}"] = {
            "examples_per_second": stats["examples_per_second"],
            "ranker_seconds": stats["ranker_seconds"],
            "peak_rss_mib": peak.peak_mib,
        }
    return out


class _PeakMemory:
    """Peak total RSS of this process and its children (the horovodrun workers), sampled every 0.2 s."""

    def __init__(self, psutil: Any) -> None:
        import threading

        self._psutil = psutil
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_mib = 0.0

    def _sample(self) -> None:
        me = self._psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except self._psutil.Error:
                    pass
            self.peak_mib = max(self.peak_mib, total / 2**20)
            self._stop.wait(0.2)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = round(self.peak_mib, 1)


def bench_serving(cfg: PctrConfig, ds: str, requests: int = 300) -> dict[str, Any]:
    """Latency of the published bundle: the ranker on 1,000 candidates, and one /v1/rank request."""
    from fastapi.testclient import TestClient

    from jobs.layout import Layout
    from jobs.pipeline import run_stage
    from jobs.training_set import load_split
    from serving.app import create_app
    from serving.bundle import current_bundle_dir
    from serving.predictor import Predictor

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", help="simulation scale (tiny for a smoke run)")
    parser.add_argument("--days", type=int, default=5, help="simulated days (history for the training run)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pctr-bench-") as home:
        cfg = load_config(home=home)
        cfg.train.history_days = args.days - 3
        ds = ds_range(START, args.days)[-2]
        result: dict[str, Any] = {
            "scale": args.scale,
            "days": args.days,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        result["data"] = bench_data(cfg, args.scale, args.days)
        result["training"] = bench_training(cfg, ds)
        result["serving"] = bench_serving(cfg, ds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{args.scale}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
