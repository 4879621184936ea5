"""Monitor stage (``pctr_monitor``): is what is served still what the live model was trained for?

``run(cfg, hour)`` looks at the ``monitor.lookback_hours`` hours ending at the end of ``hour`` (UTC):

- drift: PSI of every spec feature and KS of every numeric one, the served log's ``served_features``
  against the live model's train split (weighted back to the traffic it was downsampled from). Entity ids
  are left out: their churn is the new users and ads of the calibration's segments. ``position`` is the
  slot served (the record's), since the served features hold the default slot the ranker scores every ad at;
- calibration: O/E and ECE of the served pCTRs of the impressions whose attribution window has closed
  (and whose click hours are complete), labelled by the raw click logs as the join labels them: overall,
  per hour, and for new and returning users, new and established ads (absent from / present in the
  train split) and each position served (reported, not gated: see ``GATED_SEGMENTS``);
- staleness: ages, from the end of ``hour``, of the live bundle's publish, of each online feature view's
  newest materialised interval, and of the end of the newest joined day.

It writes an HTML report with plots and its ``_stats.json`` (``Layout.monitor_report``), logs the figures
to MLflow (experiment ``pctr-monitor``) and then raises ``MonitorThresholdError``, naming every crossed
threshold of ``cfg.monitor``, so that the task fails. Figures on fewer impressions than
``monitor.min_segment_impressions`` are reported but not gated: their sampling noise is too large.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.bundle import current_bundle_dir, read_manifest
from core.config import MonitorConfig, PctrConfig
from core.io import Stats, staged_dir, write_stats
from core.layout import Layout, parse_hour, period_bounds
from core.raw_logs import SERVED_FEATURES, RawHour, read_served_log, readable_files
from jobs.training_set import split_files
from models.features import FEAST_ENTITIES, FEATURE_ENTITIES, FEATURES

if TYPE_CHECKING:
    import pandas as pd

EXPERIMENT = "pctr-monitor"
# Features compared with the training set: all but the entity ids.
DRIFT_FEATURES = tuple(f for f in FEATURES if f.name not in FEAST_ENTITIES.values())
# Rows of the train split drawn as the drift reference: quantiles and shares are steady long before this.
REFERENCE_ROWS = 200_000
# Segments whose calibration is gated. Position is reported only: the ranker scores every ad at the default
# slot, so served pCTRs are that slot's and their O/E by slot served measures position bias, not drift.
GATED_SEGMENTS = ("user", "ad")


class MonitorThresholdError(RuntimeError):
    """A monitoring threshold was crossed; the message lists every one and where the report is."""


def hour_window(cfg: PctrConfig, hour: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the served traffic the monitor of ``hour`` looks at: the lookback ending with that hour."""
    end = parse_hour(hour) + dt.timedelta(hours=1)
    return end - dt.timedelta(hours=cfg.monitor.lookback_hours), end


def _hours(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    count = int((end - start) / dt.timedelta(hours=1))
    return [start + dt.timedelta(hours=i) for i in range(count)]


def read_served(layout: Layout, start: dt.datetime, end: dt.datetime) -> tuple[pd.DataFrame, int]:
    """The served impressions stamped in [start, end) and the count of unusable lines of the days read."""
    import pandas as pd

    days = sorted({h.date().isoformat() for h in _hours(start, end)})
    logs = [read_served_log(layout.served_log / f"dt={ds}") for ds in days]
    malformed = sum(bad for _, bad in logs)
    frames = [log for log, _ in logs if not log.empty]
    if not frames:
        return pd.DataFrame(columns=["ts", SERVED_FEATURES]), malformed
    served = pd.concat(frames, ignore_index=True)
    inside = (served["ts"] >= start) & (served["ts"] < end)
    return served[inside].reset_index(drop=True), malformed


def served_feature_frame(served: pd.DataFrame) -> pd.DataFrame:
    """The drift features of each served impression, spec defaults filled; ``position`` is the slot served."""
    import pandas as pd

    from models.frames import fill_defaults

    names = [f.name for f in DRIFT_FEATURES]
    frame = pd.DataFrame.from_records(served[SERVED_FEATURES].tolist(), columns=names)
    frame["position"] = served["position"].to_numpy()
    return fill_defaults(frame, DRIFT_FEATURES)


def training_reference(cfg: PctrConfig, ds: str) -> tuple[pd.DataFrame, set[str], set[str]]:
    """A sample of the train split of the run closing ``ds``, drawn by row weight (so negatives count as the
    traffic they were downsampled from), with the drift features it carries; and its users and ads."""
    import pyarrow.parquet as pq

    from models.frames import fill_defaults

    files = split_files(cfg, ds, "train")
    present = set(pq.read_schema(files[0]).names)
    features = [f for f in DRIFT_FEATURES if f.name in present]
    columns = [f.name for f in features] + ["user_id", "ad_id", "weight"]
    table = pq.ParquetDataset([str(f) for f in files]).read(columns=columns).to_pandas()
    users, ads = set(table["user_id"].astype(str)), set(table["ad_id"].astype(str))
    weight = table["weight"].to_numpy(np.float64)
    rng = np.random.default_rng(cfg.train.seed)
    rows = rng.choice(len(table), size=min(len(table), REFERENCE_ROWS), p=weight / weight.sum())
    return fill_defaults(table.iloc[rows].reset_index(drop=True), features), users, ads


def first_clicks(cfg: PctrConfig, start: dt.datetime, end: dt.datetime) -> tuple[pd.Series, dt.datetime]:
    """The first clean click on each impression in the raw click hours of [start, end), by impression id, and
    the end of the complete click hours from ``start`` on (no click after it is known yet).

    Clean as the join reads them: a JSON object with an impression id and a parseable ``ts``.
    """
    import pandas as pd

    layout = Layout(cfg.home)
    hours = [RawHour("clicks", h.date().isoformat(), h.hour) for h in _hours(start, end)]
    complete = end
    for hour, hour_start in zip(hours, _hours(start, end), strict=True):
        if not hour.is_complete(layout):
            complete = hour_start
            break
    read = [h for h, h_start in zip(hours, _hours(start, end), strict=True) if h_start < complete]
    ids, stamps = [], []
    for raw_file in readable_files(cfg, read)[0]:
        for record in _json_records(raw_file.path):
            if isinstance(record.get("impression_id"), str) and isinstance(record.get("ts"), str):
                ids.append(record["impression_id"])
                stamps.append(record["ts"])
    clicks = pd.DataFrame({"impression_id": ids, "ts": pd.to_datetime(stamps, utc=True, errors="coerce")})
    clicks = clicks.dropna(subset=["ts"])
    return clicks.groupby("impression_id")["ts"].min(), complete


def _json_records(path: Path) -> list[dict[str, Any]]:
    import gzip

    records = []
    with gzip.open(path, "rt") if path.name.endswith(".gz") else open(path) as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def label_closed(
    served: pd.DataFrame, clicks: pd.Series, labels_known_until: dt.datetime, window: dt.timedelta
) -> pd.DataFrame:
    """The served impressions whose attribution window ended by ``labels_known_until``, with ``label``: 1 when
    their first click came within the window (the join's rule)."""
    closed = served[served["ts"] + window <= labels_known_until].copy()
    click_ts = closed["impression_id"].map(clicks)
    closed["label"] = ((click_ts >= closed["ts"]) & (click_ts <= closed["ts"] + window)).astype(np.int64)
    return closed.reset_index(drop=True)


def calibration_summary(labels: np.ndarray, preds: np.ndarray) -> dict[str, Any]:
    """Count, clicks, O/E, ECE (absolute and relative to the base rate), the sampling noise a calibrated
    model would show on these impressions (``models.metrics.calibration_noise``) and the reliability bins."""
    from models.metrics import calibration_noise, ece, reliability

    bins = reliability(labels, preds)
    base_rate = float(labels.mean())
    error = ece(labels, preds)
    return {
        "count": int(labels.size),
        "clicks": int(labels.sum()),
        "expected_clicks": float(preds.sum()),
        "oe_ratio": float(labels.sum() / max(preds.sum(), 1e-12)),
        "ece": error,
        "relative_ece": error / base_rate if base_rate > 0 else None,
        "base_rate": base_rate,
        "noise": calibration_noise(bins),
        "reliability": bins,
    }


def served_calibration(closed: pd.DataFrame, users: set[str], ads: set[str]) -> dict[str, Any]:
    """Calibration of the labelled served impressions: overall, per segment value, per hour served."""
    if closed.empty:
        return {"overall": {"count": 0}, "segments": {}, "by_hour": []}
    labels = closed["label"].to_numpy(np.float64)
    preds = closed["pctr_served"].to_numpy(np.float64)
    segment_values = {
        "user": np.where(closed["user_id"].astype(str).isin(users), "returning", "new"),
        "ad": np.where(closed["ad_id"].astype(str).isin(ads), "established", "new"),
        "position": closed["position"].astype(str).to_numpy(),
    }
    segments = {
        name: {str(v): calibration_summary(labels[values == v], preds[values == v]) for v in np.unique(values)}
        for name, values in segment_values.items()
    }
    per_hour = closed.groupby(closed["ts"].dt.floor("h")).agg(
        count=("label", "size"), clicks=("label", "sum"), expected=("pctr_served", "sum")
    )
    by_hour = [
        {"hour": h.strftime("%Y-%m-%dT%H"), "count": int(count), "oe_ratio": float(clicks / expected)}
        for h, count, clicks, expected in per_hour.itertuples()
    ]
    return {"overall": calibration_summary(labels, preds), "segments": segments, "by_hour": by_hour}


def staleness(cfg: PctrConfig, manifest: dict[str, Any], end: dt.datetime) -> dict[str, Any]:
    """Ages in hours at ``end``: the live bundle (its publish), each online feature view (the end of its newest
    materialised interval; none: never loaded) and the newest joined day or hour (the end of its data) up to ``end``."""
    from feature_repo.definitions import view_name
    from feature_repo.store import feature_store

    def age(since: dt.datetime | None) -> float | None:
        return None if since is None else round((end - since) / dt.timedelta(hours=1), 3)

    published = dt.datetime.fromisoformat(manifest["created_at"])
    store = feature_store(cfg)
    views = {}
    for entity in FEATURE_ENTITIES:
        intervals = store.get_feature_view(view_name(entity)).materialization_intervals
        ends = [e if e.tzinfo else e.replace(tzinfo=dt.UTC) for _, e in intervals]
        loaded_until = max(ends, default=None)
        views[view_name(entity)] = {
            "loaded_until": loaded_until.isoformat() if loaded_until else None,
            "age_hours": age(loaded_until),
        }
    newest = _newest_joined(Layout(cfg.home), end)
    newest_end = period_bounds(newest)[1] if newest else None
    return {
        "bundle": {"version": manifest["version"], "published_at": published.isoformat(), "age_hours": age(published)},
        "feature_views": views,
        "joined": {"newest": newest, "data_end": newest_end.isoformat() if newest_end else None,
                   "age_hours": age(newest_end)},
    }  # fmt: skip


def _newest_joined(layout: Layout, end: dt.datetime) -> str | None:
    """The joined day or hour (``pctr_hourly``'s partitions) whose data ends last, at or before ``end``."""
    days = [p.name.removeprefix("dt=") for p in layout.joined().glob("dt=*") if (p / "_stats.json").exists()]
    hours = [
        f"{p.parent.name.removeprefix('dt=')}T{p.name.removeprefix('hour=')}"
        for p in layout.hourly("joined").glob("dt=*/hour=*")
        if (p / "_stats.json").exists()
    ]
    closed = [key for key in (*days, *hours) if period_bounds(key)[1] <= end]
    return max(closed, key=lambda key: period_bounds(key)[1], default=None)


def _calibration_breaches(name: str, summary: dict[str, Any], monitor: MonitorConfig) -> list[str]:
    """The calibration thresholds ``summary`` crosses (none under ``min_segment_impressions``); records its bounds."""
    if summary["count"] < monitor.min_segment_impressions:
        return []
    noise = summary["noise"]
    low = monitor.oe_band[0] - monitor.oe_noise_z * noise["oe_sd"]
    high = monitor.oe_band[1] + monitor.oe_noise_z * noise["oe_sd"]
    max_ece = monitor.max_relative_ece * summary["base_rate"] + monitor.ece_noise_multiple * noise["ece"]
    summary["bounds"] = {"oe_ratio": [low, high], "ece": max_ece}
    out = []
    if not low <= summary["oe_ratio"] <= high:
        out.append(f"O/E {name} {summary['oe_ratio']:.3f} outside [{low:.3f}, {high:.3f}] ({summary['count']} imps)")
    if summary["ece"] > max_ece:
        out.append(f"ECE {name} {summary['ece']:.5f} > {max_ece:.5f} (base rate {summary['base_rate']:.4f})")
    return out


def threshold_breaches(
    monitor: MonitorConfig, served_rows: int, drift: dict[str, Any], calibration: dict[str, Any],
    ages: dict[str, Any] | None,
) -> list[str]:  # fmt: skip
    """Every crossed threshold of ``monitor``, one line each (empty: all clear). ``calibration``'s summaries
    gain the bounds they were held to."""
    out = []
    if served_rows >= monitor.min_segment_impressions:
        for name, d in drift.items():
            if d["psi"] > monitor.max_psi:
                out.append(f"PSI {name} {d['psi']:.3f} > {monitor.max_psi}")
            if d["ks"] is not None and d["ks"] > monitor.max_ks:
                out.append(f"KS {name} {d['ks']:.3f} > {monitor.max_ks}")
    if calibration["overall"]["count"]:
        out += _calibration_breaches("overall", calibration["overall"], monitor)
        for segment in GATED_SEGMENTS:
            for value, summary in calibration["segments"].get(segment, {}).items():
                out += _calibration_breaches(f"{segment}={value}", summary, monitor)
    if ages is not None:
        bundle = ages["bundle"]
        if bundle["age_hours"] > monitor.max_bundle_age_hours:
            out.append(f"bundle {bundle['version']} {bundle['age_hours']:.1f} h old > {monitor.max_bundle_age_hours}")
        for name, view in ages["feature_views"].items():
            if view["age_hours"] is None or view["age_hours"] > monitor.max_feature_age_hours:
                age = "never materialised" if view["age_hours"] is None else f"{view['age_hours']:.1f} h old"
                out.append(f"online view {name} {age} > {monitor.max_feature_age_hours}")
        joined = ages["joined"]
        if joined["age_hours"] is None or joined["age_hours"] > monitor.max_joined_age_hours:
            age = "none" if joined["age_hours"] is None else f"{joined['newest']} {joined['age_hours']:.1f} h old"
            out.append(f"joined data {age} > {monitor.max_joined_age_hours}")
    return out


def _log_to_mlflow(cfg: PctrConfig, hour: str, stats: Stats, report_dir: Path) -> str:
    """Log the figures and the report as the MLflow run of ``hour`` (a rerun of the hour reuses its run)."""
    import mlflow

    from core.tracking import mlflow_client

    client = mlflow_client(cfg, EXPERIMENT)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    earlier = client.search_runs([experiment.experiment_id], filter_string=f"tags.hour = '{hour}'", max_results=1)
    metrics: dict[str, float] = {"served_impressions": stats["served_impressions"], "breaches": len(stats["breaches"])}
    for name, d in stats["drift"].items():
        metrics[f"psi.{name}"] = d["psi"]
        if d["ks"] is not None:
            metrics[f"ks.{name}"] = d["ks"]
    overall = stats["calibration"]["overall"]
    metrics["calibration.count"] = overall["count"]
    if overall["count"]:
        metrics |= {f"calibration.{k}": overall[k] for k in ("oe_ratio", "ece", "base_rate")}
        for segment, values in stats["calibration"]["segments"].items():
            for value, summary in values.items():
                metrics[f"calibration.{segment}.{value}.oe_ratio"] = summary["oe_ratio"]
                metrics[f"calibration.{segment}.{value}.count"] = summary["count"]
    ages = stats["staleness"]
    metrics["age_hours.bundle"] = ages["bundle"]["age_hours"]
    metrics |= {
        f"age_hours.{n}": v["age_hours"] for n, v in ages["feature_views"].items() if v["age_hours"] is not None
    }
    if ages["joined"]["age_hours"] is not None:
        metrics["age_hours.joined"] = ages["joined"]["age_hours"]
    tags = {"cadence": "monitor", "hour": hour, "bundle": stats["bundle"], "passed": str(not stats["breaches"])}
    run_id = earlier[0].info.run_id if earlier else None
    with mlflow.start_run(run_id=run_id, run_name=f"monitor-{hour}", tags=tags) as run:
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
        mlflow.log_dict(stats, "report/_stats.json")
        return run.info.run_id


def run(cfg: PctrConfig, hour: str) -> Stats:
    """Monitor the served traffic of the lookback ending with ``hour``; raise if a threshold is crossed."""
    from jobs.monitor_report import write_report
    from models.drift import feature_drift

    started = time.time()
    layout = Layout(cfg.home)
    start, end = hour_window(cfg, hour)
    bundle = current_bundle_dir(layout)
    if bundle is None:
        raise FileNotFoundError(f"no live bundle ({layout.current_pointer} is missing): nothing to monitor yet")
    manifest = read_manifest(bundle)
    reference, users, ads = training_reference(cfg, manifest["ds"])
    served, malformed = read_served(layout, start, end)
    drift: dict[str, Any] = {}
    if len(served):
        features = [f for f in DRIFT_FEATURES if f.name in reference]
        drift = feature_drift(reference, served_feature_frame(served), features, cfg.monitor.psi_bins)
    window = dt.timedelta(hours=cfg.join.attribution_window_hours)
    labelled = served.iloc[:0]
    labels_known_until = start
    if len(served):
        clicks, labels_known_until = first_clicks(cfg, start, end)
        labelled = label_closed(served, clicks, labels_known_until, window)
    calibration = served_calibration(labelled, users, ads)
    ages = staleness(cfg, manifest, end)
    breaches = threshold_breaches(cfg.monitor, len(served), drift, calibration, ages)
    report_dir = layout.monitor_report(hour)
    with staged_dir(report_dir) as scratch:
        stats: Stats = {
            "stage": "monitor",
            "hour": hour,
            "window": [start.isoformat(), end.isoformat()],
            "bundle": manifest["version"],
            "trained_on": manifest["ds"],
            "served_impressions": len(served),
            "malformed_served_lines": malformed,
            "labels_known_until": labels_known_until.isoformat(),
            "reference_rows": len(reference),
            "drift": drift,
            "not_compared": [f.name for f in DRIFT_FEATURES if f.name not in reference],
            "calibration": calibration,
            "staleness": ages,
            "breaches": breaches,
            "report": str(report_dir / "index.html"),
        }
        write_report(scratch, cfg.monitor, stats)
        stats["mlflow_run_id"] = _log_to_mlflow(cfg, hour, stats, scratch)
        stats["seconds"] = round(time.time() - started, 2)
        write_stats(scratch, stats)
    if breaches:
        raise MonitorThresholdError(
            f"monitor {hour}: {len(breaches)} threshold(s) crossed: {'; '.join(breaches)} (report {stats['report']})"
        )
    return stats
