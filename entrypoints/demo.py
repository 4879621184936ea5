"""``make demo``: simulate a few days, run pctr_daily and two pctr_hourly runs through Airflow, serve, rank.

History days (features warm-up and training data) go through the local runner's data stages in a
process of its own, the day being closed goes through ``airflow dags test pctr_daily --use-executor``,
then the first two hours of the next day through ``pctr_hourly`` the same way; all run the same stage
functions. The terminal shows each task as it starts and ends and the
training's epochs; the whole Airflow output goes to ``$PCTR_HOME/demo/airflow_dags_test.log``. A failed
task ends the demo at once with its log tail. Writes ``$PCTR_HOME/demo/summary.json``, with the peak
memory of every process the demo started, summed (whole run, history, each stage).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime as dt
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import PctrConfig, load_config
from core.io import read_json, write_json_atomic
from core.layout import Layout, day_bounds, ds_range, hour_key, parse_ds, parse_hour, shift_ds
from core.processes import ChildProcesses
from core.raw_logs import RawHour
from core.resources import PeakMemory
from core.spark import stop_spark
from entrypoints.airflow_local import (
    WAITING_LINE,
    DagTestOutput,
    TaskEvent,
    api_server_command,
    dags_test_command,
    dags_test_env,
    free_port,
    migrate,
    task_log_tail,
    wait_api_ready,
    wait_http_ready,
)
from entrypoints.local_runner import run_day
from jobs.evaluate import SUMMARY_METRICS as EVALUATION_METRICS
from jobs.pipeline import DAILY_STAGES, HOURLY_STAGES
from jobs.wait_for_logs import needed_hours

DEMO_CLOSED_DAY = "2026-11-06"
# Days of logs before the first training day, so that its rows already have a few days of feature
# history; the later training days see full 7-day windows. For the same 12 simulated days, 3 warm-up
# and 7 training days beat 7 and 3 (measured: +0.002 AUC for both models).
DEMO_WARMUP_DAYS = 3
DEMO_USERS = 3
# pctr_hourly runs after the closed day: the first hours of the next day, each once its window has closed
DEMO_HOURLY_RUNS = 2
HISTORY_UNTIL = "build_features"
# lines of a failed task's log shown on the terminal
TAIL_LINES = 30
SUMMARY_METRICS = (*EVALUATION_METRICS, "oracle_auc", "baseline_auc")


def demo_days(cfg: PctrConfig) -> list[str]:
    """The warm-up days for features, the training history, the validation/calibration day and the day closed."""
    n = DEMO_WARMUP_DAYS + cfg.train.history_days + 2
    return ds_range(shift_ds(DEMO_CLOSED_DAY, 1 - n), n)


def window_end(cfg: PctrConfig, ds: str) -> RawHour:
    """The last raw hour that closing ds needs: the end of its attribution window, on a later day."""
    return needed_hours(cfg, ds)[-1]


def prepare_history(cfg: PctrConfig, days: list[str], scale: str) -> None:
    """Simulate every day (once), then the hours after the last day up to the end of the attribution window of
    the last hour the demo's hourly runs close (so that the last day and those hours can be closed), and run the
    data stages of all days but the last (once).

    The simulator (one core) runs in a process of its own, day after day, while Spark works on the days
    already written: a day's data stages start once the next day is written (its clicks close the day).
    A day is written once its hours carry their completion markers (a home simulated before markers
    existed is simulated again, to the same bytes).
    """
    from simulator import logs

    layout = Layout(cfg.home)
    missing = [ds for ds in days if logs.written_through(layout, ds) < 23]
    last = window_end(cfg, demo_hours(days[-1])[-1])
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold a JVM
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as simulator:
        # one worker takes the days in order
        written = {ds: simulator.submit(logs.run, cfg, start=ds, days=1, scale=scale) for ds in missing}
        after = ds_range(shift_ds(days[-1], 1), (parse_ds(last.ds) - parse_ds(days[-1])).days)
        if after and logs.written_through(layout, last.ds) < last.hour:
            written[last.ds] = simulator.submit(
                logs.run, cfg, start=after[0], days=len(after), scale=scale, until_hour=last.hour
            )

        def wait_written(ds: str) -> None:
            if ds in written:
                written.pop(ds).result()
                through = "" if ds in days else f" through hour {last.hour:02d}"
                print(f"simulated {ds}{through} ({scale})", flush=True)

        # One Spark session for every history day (a start costs seconds a day), stopped before Airflow
        # runs. Up to the features: the online store serves the newest day's values, which the closed
        # day's own materialize writes for every entity; training rows come from the offline store.
        try:
            for i, ds in enumerate(days[:-1]):
                wait_written(ds)
                wait_written(days[i + 1])
                if not (layout.stage_output(HISTORY_UNTIL, ds) / "_stats.json").exists():
                    run_day(cfg, ds, until=HISTORY_UNTIL, log=lambda line: print(line, flush=True), keep_spark=True)
        except BaseException:
            simulator.shutdown(wait=False, cancel_futures=True)  # a failed day ends the demo without more days
            raise
        finally:
            stop_spark()
        for ds in list(written):
            wait_written(ds)


def start_history_apart(scale: str, children: ChildProcesses) -> subprocess.Popen:
    """Start ``prepare_history`` in a process of its own (``python -m entrypoints.demo --history-only``).

    What the data stages' libraries (Spark's Python side, Great Expectations, Feast) hold stays in the
    process that imported them: apart, it goes back to the machine before Airflow's tasks start instead of
    adding to every later stage's memory.
    """
    return children.popen([sys.executable, "-m", "entrypoints.demo", "--scale", scale, "--history-only"])


def wait_history(proc: subprocess.Popen) -> None:
    if proc.wait() != 0:
        raise SystemExit(f"preparing the history failed (exit {proc.returncode})")


@dataclass(frozen=True)
class AirflowApi:
    """The Execution API server the demo's ``dags test`` reports to, and the environment both share."""

    proc: subprocess.Popen
    port: int
    env: dict[str, str]


def start_airflow_api(cfg: PctrConfig, children: ChildProcesses) -> AirflowApi:
    """Migrate Airflow's database and start its Execution API server (readiness is checked before use).

    Both cost half a minute of one core: the demo does them while the history's Spark jobs run.
    """
    migrate(cfg)
    port = free_port()
    env = dags_test_env(cfg, port)
    with open(Layout(cfg.home).demo / "airflow_api_server.log", "w") as out:
        proc = children.popen(api_server_command(port), env=env, stdout=out, stderr=subprocess.STDOUT)
    return AirflowApi(proc, port, env)


def run_dag_with_airflow(
    cfg: PctrConfig, run: DagRun, api: AirflowApi, children: ChildProcesses, memory: PeakMemory
) -> dict[str, dict[str, Any]]:
    """Run one DAG run with ``airflow dags test --use-executor``; each task's final state and seconds.

    The terminal gets each task's start and end and the training's epoch lines; a failed task stops
    Airflow at once and ends the demo (SystemExit) after printing the task's log tail. Each task is a
    phase of ``memory`` (named ``<phase prefix><task>``).
    """
    layout = Layout(cfg.home)
    wait_api_ready(api.port, api.proc)
    log_path = layout.demo / f"airflow_dags_test{run.log_suffix}.log"
    print(
        f"airflow dags test {run.dag_id} {run.logical_date} --use-executor, one task at a time{run.about} "
        f"(output: {log_path})",
        flush=True,
    )
    proc = children.popen(
        dags_test_command(run.dag_id, run.logical_date),
        env=api.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )  # fmt: skip
    output, recent, failed = _follow_dags_test(proc, log_path, memory, run.phase_prefix)
    name = f"{run.dag_id} {run.logical_date}"
    if failed is not None:
        children.stop(proc)
        tail = task_log_tail(cfg, run.dag_id, failed.task_id or "") or list(recent)
        print(f"\nlast lines of the {failed.task_id} task's log:", *tail, sep="\n  ", file=sys.stderr)
        raise SystemExit(f"{name}: task {failed.task_id} {failed.state}; Airflow output: {log_path}")
    not_ok = [task for task in run.tasks if output.ended.get(task, {}).get("state") != "success"]
    if proc.returncode != 0 or not_ok:
        print(*recent, sep="\n", file=sys.stderr)
        raise SystemExit(f"{name}: dags test exited {proc.returncode}, tasks not successful: {not_ok}")
    return output.ended


@dataclass(frozen=True)
class DagRun:
    """One run of a pctr DAG that the demo has Airflow make."""

    dag_id: str
    logical_date: str
    tasks: tuple[str, ...]
    about: str = ""  # what the terminal line adds, e.g. the hour the run closes
    log_suffix: str = ""  # of its output's file name under $PCTR_HOME/demo/
    phase_prefix: str = ""  # of its tasks' peak-memory phases


def daily_run(ds: str) -> DagRun:
    return DagRun("pctr_daily", ds, tuple(s.name for s in DAILY_STAGES))


def hourly_run(cfg: PctrConfig, hour: str) -> DagRun:
    """The pctr_hourly run that closes ``hour``: the one at the end of its attribution window."""
    at = parse_hour(hour) + dt.timedelta(hours=1 + cfg.join.attribution_window_hours)
    return DagRun(
        "pctr_hourly", at.isoformat(), tuple(s.name for s in HOURLY_STAGES), about=f", closing {hour}",
        log_suffix=f"_hourly_{hour}", phase_prefix=f"hourly {hour} ",
    )  # fmt: skip


def monitor_run(ds: str) -> DagRun:
    """The pctr_monitor run after the demo's requests (noon of the serving day): the one at 13:00, watching to 12:59."""
    return DagRun(
        "pctr_monitor", f"{serving_day(ds)}T13:00:00+00:00", ("monitor",), about=f", watching up to {monitor_hour(ds)}",
        log_suffix="_monitor", phase_prefix="monitor ",
    )  # fmt: skip


def monitor_hour(ds: str) -> str:
    return f"{serving_day(ds)}T12"


def demo_hours(ds: str) -> list[str]:
    """The hours the demo's hourly runs close after the closed day ds: the first of the next day."""
    start = day_bounds(shift_ds(ds, 1))[0]
    return [hour_key(start + dt.timedelta(hours=h)) for h in range(DEMO_HOURLY_RUNS)]


def _follow_dags_test(
    proc: subprocess.Popen, log_path: Path, memory: PeakMemory, phase_prefix: str = ""
) -> tuple[DagTestOutput, collections.deque[str], TaskEvent | None]:
    """Tee ``dags test`` output to ``log_path`` and show its progress until it exits or a task fails.

    Returns the parsed output, the last lines (for a failure without a task log) and the failed task's
    ``ended`` event, if any.
    """
    output = DagTestOutput()
    recent: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    assert proc.stdout is not None
    with open(log_path, "w") as log:
        for line in proc.stdout:
            log.write(line)
            if WAITING_LINE not in line:
                recent.append(line.rstrip("\n"))
            for event in output.feed(line):
                _show(event, memory, phase_prefix)
                if event.failed:
                    return output, recent, event
    proc.wait()
    return output, recent, None


def _show(event: TaskEvent, memory: PeakMemory, phase_prefix: str = "") -> None:
    if event.kind == "started":
        memory.begin(f"{phase_prefix}{event.task_id}")
        print(f"  {event.task_id} ...", flush=True)
    elif event.kind == "ended":
        memory.end(f"{phase_prefix}{event.task_id}")
        status = "ok" if event.state == "success" else event.state
        print(f"  {event.task_id} {status} ({event.seconds} s)", flush=True)
    else:
        print(f"    {event.text}", flush=True)


def demo_users(cfg: PctrConfig, ds: str, n: int) -> list[str]:
    """The most active users of the closed day plus one user the system has never seen."""
    import pandas as pd

    rows = pd.read_parquet(Layout(cfg.home).eval_sample(ds) / "data", columns=["user_id"])
    return [*rows["user_id"].value_counts().index[: n - 1].tolist(), "u-new-demo-user"]


def serving_day(ds: str) -> str:
    """The day the model closed on ds serves: the next one. The demo's requests carry a time in it."""
    return shift_ds(ds, 1)


def serve_and_rank(cfg: PctrConfig, ds: str, children: ChildProcesses) -> dict[str, Any]:
    """Start ``pctr serve``, rank for a few users and score one instance through the TF-Serving API.

    The ranking requests are stamped noon of the serving day (the simulated clock, not the wall
    clock), so the served log and ``pctr skew-report --ds <serving day>`` belong to the simulated world;
    the service runs in replay mode, the only one that accepts a request's time.
    """
    import httpx

    url = f"http://{cfg.serving.host}:{cfg.serving.port}"
    replay = {**os.environ, "PCTR_SERVING__REPLAY": "true"}  # the service takes the requests' simulated time
    with open(Layout(cfg.home).demo / "serve.log", "w") as out:
        command = [sys.executable, "-m", "entrypoints.cli", "serve"]
        proc = children.popen(command, stdout=out, stderr=subprocess.STDOUT, env=replay)
    try:
        wait_http_ready(f"{url}/readyz", proc, "the service", timeout=180.0)
        context = {"placement": "feed", "device": "ios", "os": "ios", "country": "US"}
        request = {"context": context, "slots": 3, "request_time": f"{serving_day(ds)}T12:00:00Z"}
        ranked = []
        for user_id in demo_users(cfg, ds, DEMO_USERS):
            response = httpx.post(f"{url}/v1/rank", json={"user_id": user_id, **request}, timeout=30.0)
            response.raise_for_status()
            ranked.append(response.json())
        first = ranked[0]["ads"][0]
        instance = {"user_id": ranked[0]["user_id"], "ad_id": first["ad_id"], "advertiser_id": first["advertiser_id"]}
        predicted = httpx.post(f"{url}/v1/models/pctr:predict", json={"instances": [instance]}, timeout=30.0).json()
        return {"rank": ranked, "predict": {"instances": [instance], **predicted}}
    finally:
        children.stop(proc, grace=30.0)  # the service writes its served log on the way out: give it time


def task_summary(task: dict[str, Any], peak_memory_mib: float | None) -> dict[str, Any]:
    """A task in the summary: ``ok`` or its final state, the seconds of its process and its peak memory."""
    state = task.get("state")
    return {
        "status": "ok" if state == "success" else state,
        "seconds": task.get("seconds"),
        "peak_memory_mib": peak_memory_mib,
    }


def summarise(
    cfg: PctrConfig, ds: str, tasks: dict[str, dict[str, Any]], peaks: dict[str, float], served: dict[str, Any]
) -> dict[str, Any]:
    """The demo's summary: each stage's status, seconds and peak memory, metrics, model and serving examples.

    ``tasks`` maps a task to its final ``state`` and ``seconds``; ``peaks`` maps a phase (a task name,
    ``history``, ``serve``) to the peak summed RSS in MiB of the demo's processes while it ran.
    """
    from core.layout import retrieval_dir
    from jobs.evaluate import load_evaluation

    layout = Layout(cfg.home)
    evaluation = load_evaluation(cfg, ds)
    registered = read_json(layout.stage_output("register", ds) / "_stats.json")
    retrieval = read_json(retrieval_dir(cfg, ds) / "_stats.json")
    stages = {stage.name: task_summary(tasks.get(stage.name, {}), peaks.get(stage.name)) for stage in DAILY_STAGES}
    return {
        "ds": ds,
        "stages": stages,
        "history_peak_memory_mib": peaks.get("history"),
        "serve_peak_memory_mib": peaks.get("serve"),
        "metrics": {k: evaluation["metrics"].get(k) for k in SUMMARY_METRICS},
        "model_version": registered["model_version"],
        "champion": registered["champion_version"],
        "promoted": registered["promoted"],
        "index_size": retrieval["index_size"],
        "retrieval": {k: v for k, v in retrieval.items() if k.startswith("recall_at_") or k == "random_recall"},
        "rank_example": served["rank"][0],
        "ranked_users": [{"user_id": r["user_id"], "ads": [a["ad_id"] for a in r["ads"]]} for r in served["rank"]],
        "predict_example": served["predict"],
    }


def summarise_hourly(
    cfg: PctrConfig, hour: str, tasks: dict[str, dict[str, Any]], peaks: dict[str, float]
) -> dict[str, Any]:
    """One hourly run in the summary: each task's status, seconds and peak memory, the gate and the promotion."""
    from jobs.evaluate import load_evaluation

    evaluation = load_evaluation(cfg, hour)
    registered = read_json(Layout(cfg.home).stage_output("register", hour) / "_stats.json")
    prefix = hourly_run(cfg, hour).phase_prefix
    return {
        "hour": hour,
        "stages": {
            stage.name: task_summary(tasks.get(stage.name, {}), peaks.get(f"{prefix}{stage.name}"))
            for stage in HOURLY_STAGES
        },
        "seconds": round(sum(task.get("seconds") or 0.0 for task in tasks.values()), 1),
        "metrics": {k: evaluation["metrics"].get(k) for k in SUMMARY_METRICS},
        "holdout_rows": evaluation["rows"],
        "gate_passed": evaluation["promote"],
        "gate": evaluation["gate_reason"],
        "model_version": registered["model_version"],
        "promoted": registered["promoted"],
        "promotion": registered["promotion"],
        "champion": registered["champion_version"],
    }


def summarise_monitor(
    cfg: PctrConfig, ds: str, tasks: dict[str, dict[str, Any]], peaks: dict[str, float]
) -> dict[str, Any]:
    """The monitor run in the summary: its task, the figures it gated on and its report."""
    hour = monitor_hour(ds)
    stats = read_json(Layout(cfg.home).monitor_report(hour) / "_stats.json")
    psi = {name: d["psi"] for name, d in stats["drift"].items()}
    top = max(psi, key=psi.__getitem__) if psi else None
    overall = stats["calibration"]["overall"]
    staleness = stats["staleness"]
    return {
        "hour": hour,
        **task_summary(tasks.get("monitor", {}), peaks.get("monitor monitor")),
        "bundle": stats["bundle"],
        "served_impressions": stats["served_impressions"],
        "drift_gated": stats["served_impressions"] >= cfg.monitor.min_segment_impressions,
        "max_psi": {"feature": top, "psi": psi[top]} if top else None,
        "labelled_served_impressions": overall["count"],
        "served_oe_ratio": overall.get("oe_ratio"),
        "staleness_hours": {
            "bundle": staleness["bundle"]["age_hours"],
            "joined": staleness["joined"]["age_hours"],
            **{name: view["age_hours"] for name, view in staleness["feature_views"].items()},
        },
        "breaches": stats["breaches"],
        "report": stats["report"],
    }


def join_checksums(cfg: PctrConfig, days: list[str]) -> dict[str, str]:
    """Each day's joined rows as the join recorded them (order-independent): equal on every Spark master."""
    layout = Layout(cfg.home)
    return {ds: read_json(layout.joined(ds) / "_stats.json")["checksum"] for ds in days}


def skew_check(cfg: PctrConfig, ds: str) -> dict[str, Any]:
    """``pctr skew-report`` over what the demo just served: batch features must match the offline store."""
    from analysis import skew_report

    served_day = serving_day(ds)
    report = skew_report.run(cfg, served_day)
    return {
        "served_day": served_day,
        "rows_compared": report["rows_compared"],
        "max_batch_mismatch_rate": report["max_batch_mismatch_rate"],
    }


def run_demo(cfg: PctrConfig, scale: str, children: ChildProcesses, memory: PeakMemory) -> dict[str, Any]:
    """The demo's steps: history (local runner), the closed day (Airflow), serving; returns the summary.

    The whole run's peak memory is not in it: ``main`` adds it once ``memory`` has stopped.
    """
    started = time.time()
    days = demo_days(cfg)
    ds = days[-1]
    memory.begin("history")
    history = start_history_apart(scale, children)
    api = start_airflow_api(cfg, children)
    wait_history(history)
    memory.end("history")
    try:
        tasks = run_dag_with_airflow(cfg, daily_run(ds), api, children, memory)
        registered = read_json(Layout(cfg.home).stage_output("register", ds) / "_stats.json")
        if not registered["promoted"]:
            raise SystemExit(
                f"pctr demo: model version {registered['model_version']} is not live: {registered['promotion']}"
            )
        hourly = {
            hour: run_dag_with_airflow(cfg, hourly_run(cfg, hour), api, children, memory) for hour in demo_hours(ds)
        }
        memory.begin("serve")
        served = serve_and_rank(cfg, ds, children)
        memory.end("serve")
        monitored = run_dag_with_airflow(cfg, monitor_run(ds), api, children, memory)
    finally:
        children.stop(api.proc)
    summary = summarise(cfg, ds, tasks, memory.phase_peaks_mib, served)
    summary["monitor"] = summarise_monitor(cfg, ds, monitored, memory.phase_peaks_mib)
    summary["hourly"] = [summarise_hourly(cfg, hour, tasks, memory.phase_peaks_mib) for hour, tasks in hourly.items()]
    if summary["hourly"]:  # what is live once the hourly runs are done: the daily model or a refresh of it
        summary["champion"] = summary["hourly"][-1]["champion"]
    summary["skew"] = skew_check(cfg, ds)
    summary["join_checksums"] = join_checksums(cfg, days)
    summary["wall_seconds"] = round(time.time() - started, 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 130 if interrupted (SIGINT or SIGTERM), after stopping every process it started."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--history-only", action="store_true", help="only simulate and prepare the history days")
    args = parser.parse_args(argv)
    cfg = load_config()
    if args.history_only:
        prepare_history(cfg, demo_days(cfg), args.scale)
        return 0
    layout = Layout(cfg.home)
    layout.demo.mkdir(parents=True, exist_ok=True)
    children = ChildProcesses()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # the demo's own process and every descendant: Spark JVMs, Airflow and its task processes, horovodrun
        with PeakMemory(interval=0.5) as memory:
            summary = run_demo(cfg, args.scale, children, memory)
    except KeyboardInterrupt as interrupted:
        print(f"\npctr demo: interrupted ({interrupted or 'SIGINT'}); stopping what it started", file=sys.stderr)
        return 130
    finally:
        _stop_uninterrupted(children, previous)
    summary["peak_memory_mib"] = memory.peak_mib
    write_json_atomic(layout.demo / "summary.json", summary)
    _print_human(summary, layout.demo / "summary.json")
    return 0


def _stop_uninterrupted(children: ChildProcesses, handlers: dict[int, Any]) -> None:
    """Stop every child with SIGINT and SIGTERM ignored meanwhile (a second Ctrl-C must not cut it short)."""
    for sig in handlers:
        signal.signal(sig, signal.SIG_IGN)
    try:
        children.stop()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _print_human(summary: dict[str, Any], path: Path) -> None:
    m = summary["metrics"]
    print(f"\npctr demo: closed {summary['ds']} in {summary['wall_seconds']} s; every stage ok")
    print(
        f"  ranker AUC {m['auc']:.4f} (oracle {m['oracle_auc']:.4f}, baseline {m['baseline_auc']:.4f}), "
        f"logloss {m['logloss']:.4f}, NE {m['normalized_entropy']:.4f}, ECE {m['ece']:.4f}, O/E {m['oe_ratio']:.3f}"
    )
    stage_peaks = {name: s["peak_memory_mib"] or 0.0 for name, s in summary["stages"].items()}
    top = max(stage_peaks, key=stage_peaks.__getitem__)
    print(
        f"  peak memory (summed RSS of the demo's processes) {summary['peak_memory_mib']:,.0f} MiB; history "
        f"{summary['history_peak_memory_mib']:,.0f} MiB; largest stage {top} {stage_peaks[top]:,.0f} MiB"
    )
    print(f"  model version {summary['model_version']} (champion {summary['champion']})")
    for run in summary["hourly"]:
        decision = "live" if run["promoted"] else "registered, not live"
        print(
            f"  pctr_hourly {run['hour']}: {run['seconds']} s, AUC {run['metrics']['auc']:.4f} on "
            f"{run['holdout_rows']} rows, version {run['model_version']} {decision} ({run['promotion']})"
        )
    monitor, psi = summary["monitor"], summary["monitor"]["max_psi"] or {"feature": "-", "psi": 0.0}
    print(
        f"  pctr_monitor {monitor['hour']}: {monitor['status']} ({monitor['seconds']} s), "
        f"{monitor['served_impressions']} served impressions, highest PSI {psi['feature']} {psi['psi']:.3f}"
        f"{'' if monitor['drift_gated'] else ' (too few to gate)'}, {monitor['labelled_served_impressions']} "
        f"labelled; report {monitor['report']}"
    )
    print(f"  FAISS index of {summary['index_size']} ads; retrieval {summary['retrieval']}")
    for user in summary["ranked_users"]:
        print(f"  {user['user_id']}: {', '.join(user['ads'])}")
    skew = summary["skew"]
    print(
        f"  skew report (pctr skew-report --ds {skew['served_day']}): {skew['rows_compared']} served rows, "
        f"batch mismatch rate {skew['max_batch_mismatch_rate']}"
    )
    print(f"  summary: {path}")


if __name__ == "__main__":
    sys.exit(main())
