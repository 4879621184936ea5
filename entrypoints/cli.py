"""``pctr``: one command per pipeline stage, plus simulate, run-day, run-hour, backfill, serve, promote and rollback.

Stage commands take ``--ds YYYY-MM-DD`` (those of the hourly refresh also an hour, ``YYYY-MM-DDTHH``; the
monitor ``--hour YYYY-MM-DDTHH``); with ``--json`` the last stdout line is the stage summary as one JSON object
(the same object the stage writes as ``_stats.json``). A failing stage prints one line naming the reason on
stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.config import load_config
from core.layout import parse_ds, parse_hour
from core.raw_logs import IncompleteLogsError, UnreadableRawFileError
from entrypoints.local_runner import run_day
from jobs.pipeline import DAILY_STAGES, HOURLY_STAGES, MONITOR_STAGES, STAGES_BY_NAME, run_stage
from simulator.traffic import DRIFT_KINDS, Drift

EXPECTED_ERRORS = (
    ConnectionError, FileNotFoundError, LookupError, ValueError, IncompleteLogsError, UnreadableRawFileError,
)  # fmt: skip


def _ds(value: str) -> str:
    try:
        return parse_ds(value).isoformat()
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _hour(value: str) -> str:
    try:
        parse_hour(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return value


def _ds_or_hour(value: str) -> str:
    """A day, or an hour for the stages that the hourly refresh runs too."""
    return _hour(value) if "T" in value else _ds(value)


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True, default=str))
    else:
        for key, value in result.items():
            print(f"{key}: {json.dumps(value, default=str) if isinstance(value, dict | list) else value}")


def _cmd_simulate(args: argparse.Namespace) -> dict[str, Any]:
    from simulator import logs

    if (args.drift_from is None) != (args.drift is None):
        raise ValueError("--drift-from and --drift go together: the day the world changes and how")
    drift = None if args.drift is None else Drift(parse_ds(args.drift_from), frozenset(args.drift))
    return logs.run(
        load_config(), start=args.start, days=args.days, scale=args.scale, seed=args.seed, faults=args.faults,
        until_hour=args.until_hour, drift=drift,
    )  # fmt: skip


def _cmd_stage(name: str) -> Callable[[argparse.Namespace], dict[str, Any]]:
    def command(args: argparse.Namespace) -> dict[str, Any]:
        return run_stage(load_config(), name, args.ds)

    return command


def _cmd_hourly_stage(name: str) -> Callable[[argparse.Namespace], dict[str, Any]]:
    def command(args: argparse.Namespace) -> dict[str, Any]:
        return run_stage(load_config(), name, args.hour)

    return command


def _cmd_validate(args: argparse.Namespace) -> dict[str, Any]:
    return run_stage(load_config(), f"validate_{args.stage}", args.ds)


def _cmd_run_day(args: argparse.Namespace) -> dict[str, Any]:
    report = run_day(load_config(), args.ds, until=args.until, log=lambda line: print(line, file=sys.stderr))
    return {"ds": report["ds"], "stages": report["stages"]}


def _cmd_backfill(args: argparse.Namespace) -> dict[str, Any]:
    from entrypoints.airflow_local import backfill

    return backfill(load_config(), args.first, args.last)


def _cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    from serving.app import serve

    serve(host=args.host, port=args.port, workers=args.workers)
    return {}


def _cmd_skew_report(args: argparse.Namespace) -> dict[str, Any]:
    from analysis import skew_report

    return skew_report.run(load_config(), args.ds)


def _cmd_benchmark_dataset(args: argparse.Namespace) -> dict[str, Any]:
    from analysis import benchmark_dataset

    return benchmark_dataset.run(
        load_config(),
        args.path,
        args.format,
        label=args.label,
        categorical=_columns(args.categorical),
        numeric=_columns(args.numeric),
        max_rows=args.max_rows,
    )


def _columns(value: str | None) -> list[str] | None:
    return [c for c in value.split(",") if c] if value else None


def _cmd_promote(args: argparse.Namespace) -> dict[str, Any]:
    from core.champion import promote

    return promote(load_config(), args.version)


def _cmd_rollback(args: argparse.Namespace) -> dict[str, Any]:
    from core.champion import rollback

    return rollback(load_config())


def _cmd_config(args: argparse.Namespace) -> dict[str, Any]:
    return json.loads(load_config().model_dump_json())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pctr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], dict[str, Any]], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="print the summary as one JSON line (last line)")
        p.set_defaults(handler=handler)
        return p

    p = add("simulate", _cmd_simulate, "write simulated raw logs and ground truth under $PCTR_HOME/data")
    p.add_argument("--start", type=_ds, required=True)
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--scale", default="small", help="tiny | small | medium | large")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--faults", type=float, default=0.0, help="fraction of faulty records to inject")
    p.add_argument("--until-hour", type=int, default=None, help="write the last day only through this hour (0-23)")
    p.add_argument("--drift-from", type=_ds, default=None, help="the first day of a drifted world (with --drift)")
    p.add_argument(
        "--drift", action="append", choices=DRIFT_KINDS, default=None,
        help="what drifts from --drift-from: traffic (the request mix) or clicks (the true click rate); repeatable",
    )  # fmt: skip

    hourly = {stage.name for stage in HOURLY_STAGES}
    for stage in STAGES_BY_NAME.values():
        if stage.module == "jobs.validate" or stage in MONITOR_STAGES:  # a validate command; the monitor's --hour
            continue
        period = _ds_or_hour if stage.name in hourly else _ds
        add(stage.command, _cmd_stage(stage.name), stage.help).add_argument(
            "--ds",
            type=period,
            required=True,
            help="YYYY-MM-DD" + (" or an hour, YYYY-MM-DDTHH" if period is _ds_or_hour else ""),
        )
    for stage in MONITOR_STAGES:
        help_ = f"{stage.help} (the hours up to the end of --hour, UTC)"
        add(stage.command, _cmd_hourly_stage(stage.name), help_).add_argument("--hour", type=_hour, required=True)
    p = add("validate", _cmd_validate, "Great Expectations gate on raw or joined data of ds")
    p.add_argument("--ds", type=_ds, required=True)
    p.add_argument("--stage", choices=("raw", "joined"), required=True)

    p = add("run-day", _cmd_run_day, "run the whole daily pipeline for DS locally (no Airflow)")
    p.add_argument("ds", type=_ds)
    p.add_argument("--until", choices=[stage.name for stage in DAILY_STAGES], help="stop after this stage")

    p = add("run-hour", _cmd_run_day, "run the hourly refresh of the live ranker on HOUR's data locally (no Airflow)")
    p.add_argument("ds", metavar="hour", type=_hour, help="YYYY-MM-DDTHH: the newest hour whose window has closed")
    p.add_argument("--until", choices=[stage.name for stage in HOURLY_STAGES], help="stop after this stage")

    p = add("backfill", _cmd_backfill, "have Airflow's scheduler run pctr_daily again for the days FIRST..LAST")
    p.add_argument("first", type=_ds)
    p.add_argument("last", type=_ds)

    p = add("serve", _cmd_serve, "start the ranking service on the CURRENT bundle")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="processes (serving.workers); >1 needs Redis state")

    p = add("skew-report", _cmd_skew_report, "compare served feature values with offline values for ds")
    p.add_argument("--ds", type=_ds, required=True)

    p = add("benchmark-dataset", _cmd_benchmark_dataset, "DeepFM vs logistic regression on any click file")
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=("criteo", "obd", "csv"), required=True)
    p.add_argument("--label", help="label column (csv)")
    p.add_argument("--categorical", help="comma-separated categorical columns (csv)")
    p.add_argument("--numeric", help="comma-separated numeric columns (csv)")
    p.add_argument("--max-rows", type=int, default=None, help="read at most this many rows")
    p.set_defaults(always_json=True)  # its contract: the last stdout line is the JSON result

    p = add("promote", _cmd_promote, "make a registered model version champion and its bundle CURRENT")
    p.add_argument("version")
    add("rollback", _cmd_rollback, "make the previous champion live again (alias and CURRENT)")

    add("config", _cmd_config, "print the effective configuration")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = args.handler(args)
    except Exception as err:
        # bad input and failed gates are expected: one line says why; anything else also gets its traceback
        if not isinstance(err, EXPECTED_ERRORS) and not type(err).__module__.startswith("jobs."):
            traceback.print_exc()
        first_line = (str(err).strip().splitlines() or [""])[0]
        print(f"pctr {args.command}: {type(err).__name__}: {first_line}", file=sys.stderr)
        return 1
    if result:
        _emit(result, args.json or getattr(args, "always_json", False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
