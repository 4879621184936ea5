"""bench.capacity's projection: the arithmetic docs/scaling.md quotes, on round inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.capacity import Assumptions, Target, project, projection, training_rows_per_day
from bench.serving import most_loaded_within

MEASURED = {
    "join_rows_per_core_s": 10_000.0,
    "features_rows_per_core_s": 50_000.0,
    "train_examples_per_worker_s": 20_000.0,
    "training_set_rows_per_core_s": 10_000.0,
    "serving_qps_per_core": 100.0,
    "serving_p99_ms": 50.0,
    "redis_bytes_user": 300.0,
    "redis_bytes_ad": 300.0,
    "redis_bytes_advertiser": 300.0,
    "redis_bytes_user_category": 200.0,
    "user_category_rows_per_user": 10.0,
    "categories": 20.0,
    "materialize_rows_per_s": 20_000.0,
}
TARGET = Target(impressions_per_day=3.6e9, users=1e6, ads=1e5, qps=10_000.0)


def test_training_rows_keep_every_positive_and_the_sampled_share_of_negatives() -> None:
    assert training_rows_per_day(1_000, ctr=0.02, neg_rate=0.1) == pytest.approx(20 + 980 * 0.1)
    assert training_rows_per_day(1_000, ctr=0.02, neg_rate=1.0) == pytest.approx(1_000)


def test_projection_arithmetic() -> None:
    assume = Assumptions(ctr=0.02, neg_rate=0.1, train_days=5, epochs=2, train_hours=1.0, batch_hours=2.0,
                         serving_headroom=1.5, redis_headroom=2.0, ads_per_advertiser=10.0)  # fmt: skip
    out = project(MEASURED, TARGET, assume)
    # 3.6e9 impressions at 10,000 a core-second: 100 core-hours, 50 cores for a 2-hour deadline
    assert out["spark"]["join"] == {"executor_core_hours_per_day": 100.0, "executor_cores_within_deadline": 50}
    assert out["spark"]["features"]["executor_core_hours_per_day"] == 20.0
    assert out["spark"]["total_executor_core_hours_per_day"] == 120.0
    rows = 3.6e9 * (0.02 + 0.98 * 0.1)  # 424.8M a day
    assert out["training"]["rows_per_day"] == round(rows)
    assert out["training"]["examples_per_train"] == round(rows * 5 * 2)
    # 4.248e9 examples in an hour at 20,000 a worker: 59 workers
    assert out["training"]["workers"] == 59
    assert out["training"]["training_set_core_hours"] == pytest.approx(rows * 5 / 10_000 / 3600, abs=0.05)
    # 10,000 QPS x 1.5 at 100 a core
    assert out["serving"]["cores"] == 150
    assert out["serving"]["cores_without_headroom"] == 100
    gib = 2.0**30
    data = 1e6 * 300 + 1e5 * 300 + 1e4 * 300 + 1e7 * 200
    assert out["redis"]["data_gib"] == pytest.approx(data / gib, abs=0.05)
    assert out["redis"]["provisioned_gib"] == pytest.approx(2 * data / gib, abs=0.05)
    assert out["redis"]["data_gib_every_category"] == pytest.approx((data + 1e6 * 10 * 200) / gib, abs=0.05)
    assert out["redis"]["rows"] == {"advertiser": 10_000, "user_category": 10_000_000}
    assert out["redis"]["materialize_hours_one_process"] == pytest.approx(
        (1e6 + 1e5 + 1e4 + 1e7) / 20_000 / 3600, abs=0.05
    )


def test_projection_reads_every_input_from_the_results_files(tmp_path: Path) -> None:
    bench = {
        "machine": {"cpus": 2},
        "medium_day": {
            "num_proc": 2,
            "join_logs": {"input_impressions": 1_000_000, "stage_seconds": 40.0},
            "other_joins": {"d2": {"stage_seconds": 50.0}},
            "build_features": {"stage_seconds": 10.0},
            "training_set": {"stage_seconds": 5.0, "splits": {"train": {"rows": 60_000}, "holdout": {"rows": 40_000}}},
            "train": {"examples_per_second": 30_000.0},
        },
    }  # fmt: skip
    serving = {"per_core": {"qps_within_p99_target": 120.0, "p99_ms_within_target": 60.0}}
    view = {"rows": 100, "bytes_per_row": 300.0}
    capacity = {
        "redis": {
            "rows_per_second": 20_000.0,
            "views": {"user": view, "ad": view, "advertiser": view,
                      "user_category": {"rows": 1_500, "bytes_per_row": 250.0, "categories": 20}},
        }
    }  # fmt: skip
    (tmp_path / "bench-medium-small.json").write_text(json.dumps(bench))
    (tmp_path / "serving.json").write_text(json.dumps(serving))
    out = projection(capacity, tmp_path)
    values = {name: entry["value"] for name, entry in out["inputs"].items()}
    assert values["join_rows_per_core_s"] == 10_000.0  # the slower day: 1M / (50 s x 2 cores)
    assert values["features_rows_per_core_s"] == 50_000.0
    assert values["train_examples_per_worker_s"] == 15_000.0
    assert values["training_set_rows_per_core_s"] == 10_000.0
    assert values["user_category_rows_per_user"] == 15.0
    assert values["serving_qps_per_core"] == 120.0
    assert all(entry["from"] for entry in out["inputs"].values())
    assert out["result"]["serving"]["cores"] == 1_250  # 100k x 1.5 / 120


def test_serving_per_core_takes_the_most_loaded_run_within_the_p99_target() -> None:
    runs = [
        {"concurrency": 1, "qps": 124.0, "p99_ms": 9.0, "failed": 0},
        {"concurrency": 4, "qps": 116.0, "p99_ms": 58.0, "failed": 0},
        {"concurrency": 8, "qps": 121.0, "p99_ms": 150.0, "failed": 0},
        {"concurrency": 16, "qps": 119.0, "p99_ms": 90.0, "failed": 3},
    ]
    assert most_loaded_within(runs, 100.0)["concurrency"] == 4
    assert most_loaded_within(runs, 5.0) is None
