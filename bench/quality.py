"""Ranker quality on simulated and public click logs: DeepFM against the tuned baseline, and the oracle.

``benchmark-dataset`` (``analysis.benchmark_dataset.run``, the same code and default configuration a
user runs) on:
- the simulator's impressions of one small-scale day, sampled uniformly to 10k, 100k and 1M rows (kept
  in time order), with the columns a log carries: user, ad, advertiser, campaign, category, creative,
  placement, position, hour and the user's device, age, gender and country. The simulator knows each
  impression's true click probability: its AUC and log loss on the same test rows are the oracle's;
- the Open Bandit Dataset sample (``analysis.open_bandit``).

``python -m bench.quality [--sizes 10000,100000,1000000]`` writes ``bench/results/quality.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from analysis import benchmark_dataset, open_bandit
from bench.run import run_info
from core.config import PctrConfig, load_config
from core.io import write_json_atomic
from core.layout import Layout
from models.metrics import auc, logloss
from simulator import traffic
from simulator import world as sw

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (10_000, 100_000, 1_000_000)
SIMULATED_DAY = "2026-11-06"
SIMULATED_COLUMNS = ("user", "ad", "advertiser", "campaign", "category", "creative", "placement", "position",
                     "hour", "device", "age", "gender", "country")  # fmt: skip


def simulated_log(cfg: PctrConfig, rows: int, path: Path, scale: str = "small") -> tuple[np.ndarray, np.ndarray]:
    """Write ``rows`` impressions of a simulated day to ``path`` (CSV, time order); return their labels and click
    probabilities."""
    import pandas as pd

    users, n_ads, advertisers, impressions = cfg.simulation.scales[scale]
    world = sw.World(cfg.simulation.seed, users, n_ads, advertisers, cfg.simulation.new_ads_per_day_fraction,
                     cfg.join.max_bid)  # fmt: skip
    day = traffic.simulate_day(world, cfg, SIMULATED_DAY, cfg.simulation.seed, impressions)
    if rows > len(day.user):
        raise ValueError(f"a {scale}-scale day has {len(day.user):,} impressions, fewer than {rows:,}")
    keep = np.sort(np.random.default_rng(cfg.simulation.seed).choice(len(day.user), rows, replace=False))
    user, ad = day.user[keep], day.ad[keep]
    hour = (day.imp_ms[keep] - sw.day_ms(dt.date.fromisoformat(SIMULATED_DAY))) // traffic.HOUR_MS
    columns = {
        "click": (day.click_ms[keep] >= 0).astype(int), "user": user, "ad": day.ads.num[ad],
        "advertiser": day.ads.adv[ad], "campaign": day.ads.camp[ad], "category": day.ads.cat[ad],
        "creative": day.ads.video[ad].astype(int), "placement": day.placement[keep],
        "position": day.position[keep], "hour": hour, "device": world.device[user], "age": world.age[user],
        "gender": world.gender[user], "country": world.country[user],
    }  # fmt: skip
    pd.DataFrame(columns).to_csv(path, index=False)
    return columns["click"], day.p_click[keep]


def bench_simulated(cfg: PctrConfig, rows: int, directory: Path) -> dict[str, Any]:
    path = directory / f"simulated-{rows}.csv"
    labels, p_click = simulated_log(cfg, rows, path)
    result = benchmark_dataset.run(cfg, path, "csv", label="click", categorical=list(SIMULATED_COLUMNS))
    test = slice(result["rows"]["train"], None)
    result["oracle"] = {"auc": auc(labels[test], p_click[test]), "logloss": logloss(labels[test], p_click[test])}
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the table shows of one data set: rows, AUC and log loss of each model, the baseline's L2 choice,
    DeepFM's search."""
    fit = result["baseline_fit"]
    return {
        "rows": result["rows"],
        "base_rate": result["base_rate"],
        **{name: result[name] for name in ("model", "baseline", "oracle") if name in result},
        "model_minus_baseline_auc": _difference(result["model"]["auc"], result["baseline"]["auc"]),
        "baseline_fit": {k: fit[k] for k in ("c", "iterations", "converged", "val_logloss")},
        "validation_logloss": result["validation_logloss"],
        "search": result["search"],
        "seconds": result["seconds"],
    }


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="rows of the simulated logs")
    args = parser.parse_args(argv)
    cfg = load_config()
    result: dict[str, Any] = {"simulated": {}, **run_info()}
    with tempfile.TemporaryDirectory(prefix="pctr-quality-") as tmp:
        for rows in (int(size) for size in args.sizes.split(",")):
            result["simulated"][str(rows)] = summary(bench_simulated(cfg, rows, Path(tmp)))
    archive = open_bandit.fetch(Layout(cfg.home).public_data)
    result["open_bandit"] = summary(benchmark_dataset.run(cfg, archive, "obd"))
    write_json_atomic(RESULTS / "quality.json", result)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
