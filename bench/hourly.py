"""One pctr_hourly refresh at the demo's scale, stage by stage, on a copy of a home that ``make demo`` made.

Copies ``--home`` (not its Airflow logs or served log) to a scratch directory, simulates the hour after
the demo's last hourly run to the end of its attribution window (the simulator goes on with the demo's
world), and runs each stage of ``pctr_hourly`` for it as ``pctr <stage> --ds HOUR --json`` in a process of
its own, as an Airflow task runs it (``bench.run.measure_cli``): seconds and peak memory per stage and in
all, against the target of 3 minutes a run. The copy is removed at the end; the home is not changed.

``python -m bench.hourly --home H [--scale small]`` writes ``bench/results/hourly.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import RESULTS, measure_cli, run_info
from core.config import load_config
from core.io import read_json, write_json_atomic
from core.layout import Layout, parse_hour, shift_hour
from jobs.pipeline import HOURLY_STAGES
from jobs.wait_for_logs import needed_hours

TARGET_SECONDS = 180.0


def bench_hourly(home: Path, scale: str) -> dict[str, Any]:
    from simulator import logs

    hour = shift_hour(read_json(Layout(home).demo / "summary.json")["hourly"][-1]["hour"], 1)
    with tempfile.TemporaryDirectory(prefix="pctr-bench-hourly-") as scratch:
        copy = Path(scratch) / "home"
        shutil.copytree(home, copy, symlinks=True, ignore=shutil.ignore_patterns("logs", "served"))
        cfg = load_config(home=copy)
        last = needed_hours(cfg, hour)[-1]
        start = parse_hour(hour).date().isoformat()
        days = (dt.date.fromisoformat(last.ds) - dt.date.fromisoformat(start)).days + 1
        logs.run(cfg, start=start, days=days, scale=scale, until_hour=last.hour)
        stages, started = {}, time.time()
        for stage in HOURLY_STAGES:
            measured = measure_cli(cfg, stage.command, "--ds", hour)
            stages[stage.name] = {"seconds": measured["seconds"], "peak_rss_mib": round(measured["peak_rss_mib"], 1)}
            if stage.name == "register":
                promoted = measured["stats"]["promotion"]
        total = round(time.time() - started, 2)
    return {
        "hour": hour,
        "scale": scale,
        "stages": stages,
        "seconds": total,
        "target_seconds": TARGET_SECONDS,
        "within_target": total <= TARGET_SECONDS,
        "peak_rss_mib": max(s["peak_rss_mib"] for s in stages.values()),
        "promotion": promoted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--scale", default="small", help="the scale the demo simulated (make demo: small)")
    args = parser.parse_args(argv)
    result = {**run_info(), "hourly": bench_hourly(args.home.resolve(), args.scale)}
    path = RESULTS / "hourly.json"
    write_json_atomic(path, result)
    hourly = result["hourly"]
    print(f"pctr_hourly {hourly['hour']}: {hourly['seconds']} s (target {TARGET_SECONDS:.0f} s); {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
