"""Simulate ground-truth ad logs: raw impressions, clicks and conversions, the ad/user catalogs and the truth.

The traffic of each day (``simulator.traffic``) depends only on the seed and the day, and faults come from
a generator of their own, so simulating days one at a time or together writes identical bytes. Clicks and
conversions land in the hour partition of their own timestamp, which may be days after the impression,
under ``part-from-<impression ds>.json.gz`` so that no two simulated days share a file.

A day can also be written up to an hour (``run(..., until_hour=h)``), as a live producer writes the hours
as they pass: its impressions of hours 00 to h and its clicks and conversions stamped before the end of
hour h. A later call writes the rest (and the day's truth); every file has the bytes of a whole-day run.

Completion markers (``core.raw_logs.COMPLETE_MARKER``), written after every file of the call: an hour is
complete once every day whose events can land in it has written it. Impressions of day D land in D only;
clicks and conversions of D land in D and in the days after it (a click up to max(48 h, twice the
attribution window) after its impression, a conversion up to 72 h after its click), so an hour of clicks
of D also receives the late clicks of the days before D. Days are simulated in order, each whole before
the next begins (``run`` refuses to start after a day written only in part), so when day D has been
written through hour h, every earlier day has written all it ever will: the impression, click and
conversion hours of D from 00 to h are complete, and the call marks exactly those. The hours of D+1 that
D's late clicks already reached stay unmarked until D+1 is written.

The ad catalog of a day holds the ads launched that day, except when the previous day's catalog file is
missing (the first day of a fresh home, or after a gap): then it is a snapshot of every live ad. Each row's
``valid_from`` is the ad's launch, so a snapshot and an increment never disagree.
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.config import PctrConfig
from core.io import write_atomic
from core.layout import Layout, ds_range, parse_ds, shift_ds
from core.raw_logs import COMPLETE_MARKER, IMPRESSION_RECORD_KEYS, RAW_EVENTS, SERVED_FEATURES, RawHour, day_hours
from simulator import world as sw
from simulator.traffic import (
    CONVERSION_CAP_MS,
    HOUR_MS,
    DayLog,
    Drift,
    click_cap_ms,
    click_delays_ms,
    simulate_day,
)

FAULT_KINDS = ("malformed", "duplicate", "orphan_click", "out_of_range")
MODEL_VERSION = "sim-legacy"
# the faults' own generator (the traffic's has another tag): the traffic is the same with or without faults
_TAG_FAULT = 4
_TS_US = pa.timestamp("us", tz="UTC")


def run(
    cfg: PctrConfig,
    start: str,
    days: int,
    scale: str = "small",
    seed: int | None = None,
    faults: float = 0.0,
    until_hour: int | None = None,
    drift: Drift | None = None,
) -> dict[str, Any]:
    """Simulate ``days`` days from ``start`` into ``cfg.home`` and return JSON-able stats.

    ``faults`` is the fraction of impression lines that are corrupted, split evenly over ``FAULT_KINDS``.
    ``drift`` changes the world from its day on (the days before it are written as without it).
    ``until_hour``: the last day is written only through this hour (0-23; see the module docstring). The
    per-day counts are of the simulated day, whatever part of it is written (``written_through_hour``).
    """
    began = time.perf_counter()
    if scale not in cfg.simulation.scales:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(sorted(cfg.simulation.scales))}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not 0.0 <= faults < 1.0:
        raise ValueError(f"faults must be in [0, 1), got {faults}")
    if until_hour is not None and not 0 <= until_hour <= 23:
        raise ValueError(f"until_hour must be in [0, 23], got {until_hour}")
    layout = Layout(cfg.home)
    _require_previous_day_whole(layout, start)
    seed = cfg.simulation.seed if seed is None else seed
    n_users, n_ads, n_adv, per_day = cfg.simulation.scales[scale]
    world = sw.World(seed, n_users, n_ads, n_adv, cfg.simulation.new_ads_per_day_fraction, cfg.join.max_bid)
    per_day_stats: dict[str, dict[str, Any]] = {}
    for i, ds in enumerate(ds_range(start, days)):
        if i == 0:
            _write_users(layout, world, ds)
        log = simulate_day(world, cfg, ds, seed, per_day, drift)
        through_hour = until_hour if i == days - 1 and until_hour is not None else 23
        per_day_stats[ds] = _write_day(layout, world, cfg, log, seed, faults, through_hour)
    totals = {k: sum(s[k] for s in per_day_stats.values()) for k in ("impressions", "clicks", "conversions")}
    return {
        "start": start, "days": days, "scale": scale, "seed": seed, "faults": faults,
        "drift": None if drift is None else {"from": drift.start.isoformat(), "kinds": sorted(drift.kinds)},
        "rows": {**totals, "users": world.n_users, "ads": sum(s["catalog_ads"] for s in per_day_stats.values())},
        "per_day": per_day_stats,
        "mean_true_ctr": float(np.mean([s["mean_true_ctr"] for s in per_day_stats.values()])),
        "late_click_share": sum(s["late_clicks"] for s in per_day_stats.values()) / max(totals["clicks"], 1),
        "fault_counts": {k: sum(s["faults"][k] for s in per_day_stats.values()) for k in FAULT_KINDS},
        "paths": {
            **{event: str(layout.raw(event)) for event in ("impressions", "clicks", "conversions")},
            "ads": str(layout.catalog("ads")), "users": str(layout.catalog("users")), "truth": str(layout.truth()),
        },
        "seconds": round(time.perf_counter() - began, 3),
    }  # fmt: skip


def written_through(layout: Layout, ds: str) -> int:
    """The last hour of ds whose logs are complete, every hour before it too (-1: none; 23: the whole day)."""
    for hour in range(24):
        if not all(RawHour(event, ds, hour).is_complete(layout) for event in RAW_EVENTS):
            return hour - 1
    return 23


def _require_previous_day_whole(layout: Layout, start: str) -> None:
    """Refuse to simulate after a day that is written only in part: its late clicks would be missing from
    hours that this call marks complete."""
    previous = shift_ds(start, -1)
    if layout.raw("impressions", previous).exists() and (through := written_through(layout, previous)) < 23:
        state = f"only through hour {through:02d}" if through >= 0 else f"without {COMPLETE_MARKER} markers"
        raise ValueError(
            f"dt={previous} is written {state}: simulate it whole first (pctr simulate --start {previous}); "
            "logs written before markers existed are re-simulated the same way"
        )


def _impression_frame(world: sw.World, log: DayLog, rows: slice, bid: np.ndarray, position: np.ndarray) -> pd.DataFrame:
    """The JSON fields of impression rows ``rows`` (``bid``/``position`` may carry injected faults)."""
    compact = log.ds.replace("-", "")
    user, ad, ads = log.user[rows], log.ad[rows], log.ads
    columns = {
        "impression_id": _ids(f"i{compact}-", np.arange(len(log.imp_ms))[rows]),
        "request_id": _ids(f"r{compact}-", log.req[rows]),
        "ts": _iso(log.imp_ms[rows]),
        "user_id": world.user_ids[user],
        "ad_id": log.ad_ids[ad],
        "advertiser_id": world.advertiser_ids[ads.adv[ad]],
        "campaign_id": world.campaign_ids[ads.camp[ad]],
        "placement": np.array(sw.PLACEMENTS, dtype=object)[log.placement[rows]],
        "position": position[rows],
        "device": np.array(sw.DEVICES, dtype=object)[world.device[user]],
        "os": np.array(sw.OS_NAMES, dtype=object)[world.os[user]],
        "country": np.array(sw.COUNTRIES, dtype=object)[world.country[user]],
        "bid": bid[rows],
        "model_version": MODEL_VERSION,
        "pctr_served": log.pctr_served[rows],
        SERVED_FEATURES: None,
    }
    return pd.DataFrame(columns, columns=list(IMPRESSION_RECORD_KEYS))


def _iso(ms: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms", timezone="UTC").astype(object)


def _ids(prefix: str, nums: np.ndarray) -> np.ndarray:
    return (prefix + pd.Series(nums).astype(str)).to_numpy(dtype=object)


def _write_day(
    layout: Layout, world: sw.World, cfg: PctrConfig, log: DayLog, seed: int, faults: float, through_hour: int
) -> dict[str, Any]:
    """Inject faults (from their own generator, so clean rows stay identical) and write the files of a day
    through ``through_hour``: its logs up to the end of that hour, the truth once the day is whole, then
    the completion markers of its hours up to that one."""
    day = parse_ds(log.ds)
    rng = np.random.default_rng([seed, _TAG_FAULT, day.toordinal()])
    n = len(log.imp_ms)
    k = round(faults * n / len(FAULT_KINDS))
    whole = through_hour == 23
    # events stamped from here on are not written yet (None: the whole day's, however late they land)
    written_before_ms = None if whole else sw.day_ms(day) + (through_hour + 1) * HOUR_MS
    # the draws keep their order (faults, impression hours, orphan clicks): the same seed writes the same bytes
    picked = _pick_faults(rng, cfg, log, k)
    _write_impressions(layout, world, log, rng, picked, through_hour)
    orphans = _write_clicks_and_conversions(layout, cfg, log, rng, k, written_before_ms)
    if whole:
        _write_parquet(layout.truth(log.ds) / "part-0.parquet", _truth_table(log, picked.fault, orphans))
    catalog_ads = _write_ads(layout, world, day)
    for event in RAW_EVENTS:
        for hour in day_hours(event, log.ds, through_hour):
            hour.path(layout).mkdir(parents=True, exist_ok=True)
            (hour.path(layout) / COMPLETE_MARKER).touch()

    clicked = np.flatnonzero(log.click_ms >= 0)
    window_ms = cfg.join.attribution_window_hours * HOUR_MS
    return {
        "impressions": n, "clicks": len(clicked), "conversions": len(log.conv_row),
        "late_clicks": int((log.click_ms[clicked] - log.imp_ms[clicked] > window_ms).sum()),
        "mean_true_ctr": float(log.p_click.mean()), "click_rate": len(clicked) / n,
        "catalog_ads": catalog_ads, "live_ads": len(log.ads), "launched_ads": world.per_day,
        "faults": {"malformed": k, "duplicate": k, "orphan_click": k, "out_of_range": k},
        "written_through_hour": through_hour,
    }  # fmt: skip


@dataclass
class _Faults:
    """The impression rows picked for each fault kind, and the bids and positions with the out-of-range ones."""

    fault: np.ndarray  # the kind per impression row, None where clean
    malformed: np.ndarray  # sorted rows
    duplicate: np.ndarray  # sorted rows
    bid: np.ndarray
    position: np.ndarray


def _pick_faults(rng: np.random.Generator, cfg: PctrConfig, log: DayLog, k: int) -> _Faults:
    """``k`` distinct impression rows per kind; out-of-range rows get one bad bid or position each."""
    n = len(log.imp_ms)
    picked = rng.choice(n, 3 * k, replace=False) if k else np.empty(0, dtype=np.int64)
    malformed, duplicate, out_of_range = np.sort(picked[:k]), np.sort(picked[k : 2 * k]), picked[2 * k :]
    fault = np.full(n, None, dtype=object)
    for kind, rows in (("malformed", malformed), ("duplicate", duplicate), ("out_of_range", out_of_range)):
        fault[rows] = kind
    bid, position = log.ads.bid[log.ad], log.position.copy()
    variant = rng.integers(0, 4, k)  # negative bid, bid above max, position 0, position above max
    bid[out_of_range[variant == 0]] *= -1
    bid[out_of_range[variant == 1]] = np.round(cfg.join.max_bid * rng.uniform(1.01, 3.0, (variant == 1).sum()), 2)
    position[out_of_range[variant == 2]] = 0
    position[out_of_range[variant == 3]] = cfg.join.max_position + rng.integers(1, 50, (variant == 3).sum())
    return _Faults(fault, malformed, duplicate, bid, position)


def _write_impressions(
    layout: Layout, world: sw.World, log: DayLog, rng: np.random.Generator, picked: _Faults, through_hour: int
) -> None:
    """One file per hour (through ``through_hour``) of the day's impression lines, malformed and duplicated
    ones corrupted."""
    malformed, duplicate = picked.malformed, picked.duplicate
    hour_bounds = np.searchsorted(log.imp_ms, sw.day_ms(parse_ds(log.ds)) + HOUR_MS * np.arange(25))
    for h in range(24):
        lo, hi = hour_bounds[h], hour_bounds[h + 1]
        mal = malformed[(malformed >= lo) & (malformed < hi)] - lo
        dup = duplicate[(duplicate >= lo) & (duplicate < hi)] - lo
        # drawn for every hour, written or not: the later draws, and so the bytes, do not depend on until_hour
        cut = int(rng.integers(20, 120)) if len(mal) else 0
        redelivery = rng.integers(1, 50, len(dup)) if len(dup) else np.empty(0, dtype=np.int64)
        if h > through_hour:
            continue
        lines = _json_lines(_impression_frame(world, log, slice(lo, hi), picked.bid, picked.position))
        if len(mal):  # a truncated object is never valid JSON
            lines[mal] = pd.Series(lines[mal]).str.slice(stop=cut).to_numpy(dtype=object)
        if len(dup):  # at-least-once delivery: the same line again, a little later in the hour
            key = np.concatenate([np.arange(len(lines)), dup + redelivery + 0.5])
            lines = np.concatenate([lines, lines[dup]])[np.argsort(key, kind="stable")]
        _write_gzip_lines(layout.raw_hour("impressions", log.ds, h) / "part-0.json.gz", lines)


@dataclass
class _Orphans:
    """Clicks on impressions that were never logged: their ids, the impressions' times and the clicks'."""

    ids: np.ndarray
    imp_ms: np.ndarray
    click_ms: np.ndarray


def _write_clicks_and_conversions(
    layout: Layout, cfg: PctrConfig, log: DayLog, rng: np.random.Generator, k: int, written_before_ms: int | None
) -> _Orphans:
    """Write the day's clicks (with ``k`` orphans) and conversions into the hours they land in; drop stale files.

    With ``written_before_ms``, only the events stamped before it, and only the stale files of those hours.
    """
    compact = log.ds.replace("-", "")
    clicked = np.flatnonzero(log.click_ms >= 0)
    orphan_ms = sw.day_ms(parse_ds(log.ds)) + rng.integers(0, sw.DAY_MS, k)
    orphan_click_ms = orphan_ms + click_delays_ms(rng, k, cfg.join.attribution_window_hours)
    orphan_ids = _ids(f"i{compact}-o", np.arange(k))
    clicks = pd.DataFrame({
        "impression_id": np.concatenate([_ids(f"i{compact}-", clicked), orphan_ids]),
        "ms": np.concatenate([log.click_ms[clicked], orphan_click_ms]),
    })  # fmt: skip
    conversions = pd.DataFrame(
        {"impression_id": _ids(f"i{compact}-", log.conv_row), "ms": log.conv_ms, "value": log.conv_value}
    )
    if written_before_ms is not None:
        clicks = clicks[clicks["ms"] < written_before_ms]
        conversions = conversions[conversions["ms"] < written_before_ms]
    written = _write_by_hour(layout, "clicks", log.ds, clicks)
    written += _write_by_hour(layout, "conversions", log.ds, conversions)
    _remove_stale(layout, log.ds, set(written), cfg.join.attribution_window_hours, written_before_ms)
    return _Orphans(orphan_ids, orphan_ms, orphan_click_ms)


def _truth_table(log: DayLog, fault: np.ndarray, orphans: _Orphans) -> pa.Table:
    """One row per impression and per orphan click: its true click probability, click time and fault."""
    n, k = len(log.imp_ms), len(orphans.ids)
    compact = log.ds.replace("-", "")
    no_click = np.concatenate([log.click_ms < 0, np.zeros(k, bool)])
    return pa.table({
        "impression_id": pa.concat_arrays([
            pc.binary_join_element_wise(f"i{compact}-", pa.array(np.arange(n)).cast(pa.string()), ""),
            pa.array(orphans.ids, pa.string()),
        ]),
        "ts": pa.array(np.concatenate([log.imp_ms, orphans.imp_ms]) * 1000, _TS_US),
        "p_click": pa.array(np.concatenate([log.p_click, np.zeros(k)]), pa.float64(),
                            mask=np.concatenate([np.zeros(n, bool), np.ones(k, bool)])),
        "click_ts": pa.array(np.concatenate([log.click_ms, orphans.click_ms]) * 1000, _TS_US, mask=no_click),
        "fault": pa.array(np.concatenate([fault, np.full(k, "orphan_click", dtype=object)]), pa.string()),
    })  # fmt: skip


def _json_lines(df: pd.DataFrame) -> np.ndarray:
    if df.empty:
        return np.empty(0, dtype=object)
    text = df.to_json(orient="records", lines=True, double_precision=10)
    return np.array(text.rstrip("\n").split("\n"), dtype=object)


def _write_by_hour(layout: Layout, event: str, origin_ds: str, df: pd.DataFrame) -> list[str]:
    """Write events into the hour partitions of their own ts; returns the paths written."""
    df = df.iloc[np.argsort(df["ms"].to_numpy(), kind="stable")]
    ms = df["ms"].to_numpy()
    out = df.drop(columns="ms")
    out.insert(1, "ts", _iso(ms))
    hour_key = ms // HOUR_MS
    keys, first = np.unique(hour_key, return_index=True)
    bounds = np.append(first, len(ms))
    paths = []
    for i, key in enumerate(keys):
        when = dt.datetime.fromtimestamp(int(key) * 3600, tz=dt.UTC)
        path = layout.raw_hour(event, when.date().isoformat(), when.hour) / f"part-from-{origin_ds}.json.gz"
        _write_gzip_lines(path, _json_lines(out.iloc[bounds[i] : bounds[i + 1]]))
        paths.append(str(path))
    return paths


def _remove_stale(
    layout: Layout, origin_ds: str, written: set[str], window_hours: int, written_before_ms: int | None
) -> None:
    """Drop files that a previous run with other arguments left for ``origin_ds`` (in hours before
    ``written_before_ms`` only, if given: the later ones are not written by this call)."""
    horizon_days = math.ceil((click_cap_ms(window_hours) + CONVERSION_CAP_MS) / sw.DAY_MS) + 2
    for event in ("clicks", "conversions"):
        for ds in ds_range(origin_ds, horizon_days):
            for hour in range(24):
                if written_before_ms is not None and sw.day_ms(parse_ds(ds)) + hour * HOUR_MS >= written_before_ms:
                    break
                path = layout.raw_hour(event, ds, hour) / f"part-from-{origin_ds}.json.gz"
                if str(path) not in written and path.exists():
                    path.unlink()


def _write_ads(layout: Layout, world: sw.World, day: dt.date) -> int:
    ds = day.isoformat()
    previous = layout.catalog("ads") / f"dt={(day - dt.timedelta(days=1)).isoformat()}" / "part-0.parquet"
    ads = world.batch(day) if previous.exists() else world.live_ads(day)
    launch = pa.array(ads.launch_ms * 1000, _TS_US)
    table = pa.table({
        "ad_id": pa.array(sw.ad_ids(ads), pa.string()),
        "advertiser_id": pa.array(world.advertiser_ids[ads.adv], pa.string()),
        "campaign_id": pa.array(world.campaign_ids[ads.camp], pa.string()),
        "category": pa.array(np.array(sw.CATEGORIES, dtype=object)[ads.cat], pa.string()),
        "creative_type": pa.array(np.array(sw.CREATIVES, dtype=object)[ads.video.astype(np.int64)], pa.string()),
        "bid": pa.array(ads.bid, pa.float64()),
        "daily_budget": pa.array(ads.budget, pa.float64()),
        "launch_ts": launch,
        "valid_from": launch,
    })  # fmt: skip
    _write_parquet(layout.catalog("ads") / f"dt={ds}" / "part-0.parquet", table)
    return len(ads)


def _write_users(layout: Layout, world: sw.World, ds: str) -> None:
    signup = pa.array(world.signup_ms * 1000, _TS_US)
    table = pa.table({
        "user_id": pa.array(world.user_ids, pa.string()),
        "age_bucket": pa.array(np.array(sw.AGE_BUCKETS, dtype=object)[world.age], pa.string()),
        "gender": pa.array(np.array(sw.GENDERS, dtype=object)[world.gender], pa.string()),
        "country": pa.array(np.array(sw.COUNTRIES, dtype=object)[world.country], pa.string()),
        "signup_ts": signup,
        "valid_from": signup,
    })  # fmt: skip
    _write_parquet(layout.catalog("users") / f"dt={ds}" / "part-0.parquet", table)


def _write_gzip_lines(path: Path, lines: np.ndarray) -> None:
    text = "\n".join(lines) + "\n" if len(lines) else ""
    data = gzip.compress(text.encode(), compresslevel=1, mtime=0)  # mtime=0: reruns are byte-identical
    write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def _write_parquet(path: Path, table: pa.Table) -> None:
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))
