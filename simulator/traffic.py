"""One simulated day of traffic: the impressions a legacy ad server served, each with its true click
probability, and the clicks and conversions that follow them (``simulate_day``).

Drawn from a generator seeded by (seed, day) over a world that does not depend on the simulated dates
(``simulator.world``): a day always draws the same traffic. ``simulator.logs`` writes it as raw logs.
A ``Drift`` changes the traffic or the click model from its day on; earlier days draw what they draw without it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from core.config import PctrConfig
from core.layout import parse_ds
from simulator import world as sw

HOUR_MS = 3_600_000
LATE_CLICK_SHARE = 0.04  # of clicks arriving after the attribution window
CLICK_MEDIAN_MS = 180_000
CONVERSION_RATE = 0.05
CONVERSION_CAP_MS = 72 * 3_600_000
# seeds the day's generator with the seed and the day; simulator.logs draws its faults under a tag of its own
_TAG_DAY = 3


DRIFT_KINDS = ("traffic", "clicks")


@dataclass(frozen=True)
class Drift:
    """A change of the world from day ``start`` on (``DRIFT_KINDS``; see ``simulator.world``'s ``DRIFT_*``).

    ``traffic`` shifts the mix of requests: placements and users (the features served drift). ``clicks``
    lifts the true click rate while the legacy server's estimate stays as it was (served pCTRs under-predict).
    """

    start: dt.date
    kinds: frozenset[str]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(DRIFT_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"drift kinds must be some of {', '.join(DRIFT_KINDS)}; got {sorted(self.kinds)}")

    def on(self, day: dt.date, kind: str) -> bool:
        return day >= self.start and kind in self.kinds


@dataclass
class DayLog:
    """One simulated day before faults: impressions in ts order (as indices) plus their truth and outcomes.

    Strings are only built an hour at a time when writing, which keeps memory far below one object per field.
    """

    ds: str
    ads: sw.Ads  # the ads live that day; ``ad`` indexes it
    ad_ids: np.ndarray  # of ``ads``
    imp_ms: np.ndarray
    req: np.ndarray
    user: np.ndarray
    ad: np.ndarray
    placement: np.ndarray
    position: np.ndarray
    pctr_served: np.ndarray
    p_click: np.ndarray
    click_ms: np.ndarray  # -1 where no click
    conv_row: np.ndarray  # impression rows that converted
    conv_ms: np.ndarray
    conv_value: np.ndarray


def simulate_day(world: sw.World, cfg: PctrConfig, ds: str, seed: int, n: int, drift: Drift | None = None) -> DayLog:
    """Draw ``n`` impressions of day ``ds`` as a legacy (non-ML) ad server would have served them, in a world
    changed by ``drift`` if ds is on or after its day."""
    day = parse_ds(ds)
    traffic_drift = drift is not None and drift.on(day, "traffic")
    click_drift = drift is not None and drift.on(day, "clicks")
    rng = np.random.default_rng([seed, _TAG_DAY, day.toordinal()])
    start_ms = sw.day_ms(day)
    weight = world.activity * (world.signup_ms < start_ms)
    if traffic_drift:
        weight = weight * np.where(world.device == sw.DEVICES.index("web"), sw.DRIFT_WEB_ACTIVITY, 1.0)
    if not weight.any():
        raise ValueError(f"no simulated user has signed up by {ds}")

    # Requests: one user, time, placement each, with several ad slots; truncated to exactly n slots.
    placement = rng.choice(len(sw.PLACEMENTS), n, p=sw.DRIFT_PLACEMENT_P if traffic_drift else sw.PLACEMENT_P)
    slots = 1 + rng.binomial(np.array(sw.MAX_SLOTS)[placement] - 1, 0.4)
    n_req = int(np.searchsorted(np.cumsum(slots), n)) + 1
    placement, slots = placement[:n_req], slots[:n_req]
    slots[-1] -= slots.sum() - n
    req_user = rng.choice(world.n_users, n_req, p=weight / weight.sum())
    hours = rng.choice(24, n_req, p=sw.HOUR_VOLUME / sw.HOUR_VOLUME.sum())
    # request attributes are iid, so sorting the times alone keeps them independent of time
    req_ms = np.sort(start_ms + hours * HOUR_MS + rng.integers(0, HOUR_MS, n_req))
    req = np.repeat(np.arange(n_req), slots)
    req_start = np.concatenate([[0], np.cumsum(slots)[:-1]])
    user, imp_ms, pl = req_user[req], req_ms[req], placement[req]

    ads = world.live_ads(day)
    ad = sw.pick_ads(rng, world, ads, user, imp_ms, req, start_ms)
    hour = (imp_ms - start_ms) // HOUR_MS
    base = sum(sw.base_terms(world, ads, user, ad, hour, pl).values())
    # The legacy server ranks slots by bid x its own noisy estimate, so position is confounded with quality.
    noisy = base + rng.normal(0.0, 0.8, n)
    order = np.lexsort((-(np.log(ads.bid[ad]) + noisy), req))
    ad, base, noisy = ad[order], base[order], noisy[order]
    position = np.arange(n) - req_start[req] + 1
    slot = sw.slot_terms(user, ad, position)
    z = base + slot["position"] + slot["fatigue"]
    intercept = sw.solve_intercept(z, cfg.simulation.base_ctr * (sw.DRIFT_CTR_LIFT if click_drift else 1.0))
    p_click = sw.sigmoid(intercept + z)
    clicked = rng.random(n) < p_click
    click_ms = np.full(n, -1, dtype=np.int64)
    click_ms[clicked] = imp_ms[clicked] + click_delays_ms(rng, int(clicked.sum()), cfg.join.attribution_window_hours)
    click_rows = np.flatnonzero(clicked)
    conv_row = click_rows[rng.random(len(click_rows)) < CONVERSION_RATE]
    conv_ms = click_ms[conv_row] + 1000 + _bounded_lognormal_ms(rng, len(conv_row), 2 * HOUR_MS, 1.5, CONVERSION_CAP_MS)
    conv_value = np.round(rng.lognormal(math.log(25.0), 0.8, len(conv_row)), 2)

    # the legacy estimate is noisy but calibrated on average, as a production model would roughly be
    legacy = noisy + slot["position"]
    pctr_served = np.round(sw.sigmoid(sw.solve_intercept(legacy, cfg.simulation.base_ctr) + legacy), 6)
    return DayLog(
        ds, ads, sw.ad_ids(ads), imp_ms, req, user, ad, pl, position, pctr_served, p_click, click_ms,
        conv_row, conv_ms, conv_value,
    )  # fmt: skip


def click_delays_ms(rng: np.random.Generator, n: int, window_hours: int) -> np.ndarray:
    """Heavy-tailed click delays (>= 1 s) with ``LATE_CLICK_SHARE`` beyond ``window_hours``.

    A lognormal with median ``CLICK_MEDIAN_MS`` whose sigma puts the wanted share past the window; the
    far tail (beyond two days or twice the window) is redrawn between the window and that cap, which
    keeps the late share while bounding how many days later a click can land.
    """
    window_ms = window_hours * HOUR_MS
    sigma = math.log(window_ms / CLICK_MEDIAN_MS) / NormalDist().inv_cdf(1 - LATE_CLICK_SHARE)
    return 1000 + _bounded_lognormal_ms(rng, n, CLICK_MEDIAN_MS, sigma, click_cap_ms(window_hours), window_ms)


def click_cap_ms(window_hours: int) -> int:
    """How long after its impression a click can come at most (the far tail is redrawn below it)."""
    return max(48, 2 * window_hours) * HOUR_MS


def _bounded_lognormal_ms(
    rng: np.random.Generator, n: int, median_ms: float, sigma: float, cap_ms: int, floor_ms: int = 0
) -> np.ndarray:
    delay = rng.lognormal(math.log(median_ms), sigma, n).astype(np.int64)
    beyond = delay > cap_ms
    return np.where(beyond, rng.integers(floor_ms, cap_ms, n), delay)
