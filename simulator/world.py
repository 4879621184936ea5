"""The simulated world behind ``simulator.logs``: users, advertisers, campaigns, ads and the true click model.

Everything here is a function of (seed, scale sizes, new-ad rate, max bid) only, never of the simulated
dates, so every run agrees on the world. Ads are a stationary stream: every calendar day launches the
same number of new ads (its own generator, seeded by the day) and each ad runs for a random number of
days, so about ``n_ads`` ads are live on any day while the catalog keeps growing. Users signed up before
``SIGNUP_END``; those who sign up after a simulated day simply do not appear in it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np

CATEGORIES = (
    "apparel", "beauty", "auto", "travel", "finance", "gaming", "food", "home", "electronics", "sports",
    "health", "education", "entertainment", "pets", "jobs", "real_estate", "insurance", "telecom", "retail",
    "software",
)  # fmt: skip
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_P = (0.18, 0.28, 0.22, 0.15, 0.10, 0.07)
GENDERS = ("f", "m", "u")
GENDER_P = (0.48, 0.47, 0.05)
COUNTRIES = ("US", "IN", "BR", "GB", "DE", "FR", "JP", "CA", "MX")
COUNTRY_P = (0.40, 0.15, 0.10, 0.08, 0.07, 0.06, 0.05, 0.05, 0.04)
DEVICES = ("ios", "android", "web")
DEVICE_P = (0.40, 0.45, 0.15)
OS_BY_DEVICE = (("ios16", "ios17", "ios18"), ("android12", "android13", "android14", "android15"),
                ("windows", "macos", "linux", "chromeos"))  # fmt: skip
OS_NAMES = tuple(name for group in OS_BY_DEVICE for name in group)
PLACEMENTS = ("feed", "stories", "explore", "reels")
PLACEMENT_P = (0.55, 0.20, 0.15, 0.10)
MAX_SLOTS = (10, 5, 8, 4)  # positions per request, by placement
CREATIVES = ("image", "video")
SIGNUP_START = dt.date(2019, 1, 1)
SIGNUP_END = dt.date(2026, 1, 1)
DAY_MS = 86_400_000

# True click model (logit contributions). Scales give an oracle AUC of about 0.76.
INTEREST_COEF = 0.45
POSITION_COEF = 0.35  # times log(position)
DEVICE_EFFECT = np.array([0.10, 0.0, -0.25])
PLACEMENT_EFFECT = np.array([0.0, -0.15, 0.10, -0.05])
# creative x placement: video works in stories/reels, slightly worse in the feed
CREATIVE_EFFECT = np.array([[0.0, 0.0, 0.0, 0.0], [-0.05, 0.20, 0.05, 0.25]])
HOUR_EFFECT = 0.15 * np.cos(2 * np.pi * (np.arange(24) - 20) / 24)
FATIGUE_COEF = 0.35  # times log1p(earlier exposures of the user to the ad that day)
# Context x vertical: every category has its own hour of peak appeal (meals, evenings, office hours)
# and its own lean per device (apps on phones, software on the web), drawn per world. A first-order
# model over the same fields cannot represent them; they are what field crosses (the FM) are for.
CATEGORY_HOUR_AMPLITUDE = 0.3
CATEGORY_DEVICE_SD = 0.3
USER_BIAS_SD = 0.45
AD_QUALITY_SD = 0.4  # around the advertiser's quality
RELEVANT_SHARE = 0.85  # the legacy server's share of interest-targeted (vs random) ads
HOUR_VOLUME = (1 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 9) / 24)) / 24
# Drift from a given day (simulator.traffic.Drift), for the monitor to find. "traffic": the request mix
# moves towards stories and reels, and web users come this many times as often (a desktop campaign);
# "clicks": users click this many times as often as before, which no estimate fitted before knows.
DRIFT_PLACEMENT_P = (0.25, 0.25, 0.15, 0.35)
DRIFT_WEB_ACTIVITY = 4.0
DRIFT_CTR_LIFT = 1.5

_TAG_WORLD, _TAG_ADS, _TAG_CONTEXT = 1, 2, 5


def day_ms(day: dt.date) -> int:
    """Milliseconds since the Unix epoch at the start of ``day`` (UTC)."""
    return (day - dt.date(1970, 1, 1)).days * DAY_MS


@dataclass
class Ads:
    """A set of ads as parallel arrays (``num`` makes the id ``a<num>``)."""

    num: np.ndarray
    adv: np.ndarray
    camp: np.ndarray
    cat: np.ndarray
    video: np.ndarray
    bid: np.ndarray
    budget: np.ndarray
    launch_ms: np.ndarray
    life_days: np.ndarray
    quality: np.ndarray

    def take(self, index: np.ndarray) -> Ads:
        return Ads(**{k: v[index] for k, v in self.__dict__.items()})

    @staticmethod
    def concat(parts: list[Ads]) -> Ads:
        return Ads(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in Ads.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.num)


@dataclass
class World:
    """Users, advertisers and campaigns are drawn at construction; ads per launch day on demand."""

    seed: int
    n_users: int
    n_ads: int
    n_advertisers: int
    new_ads_fraction: float
    max_bid: float
    _batches: dict[int, Ads] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.new_ads_fraction <= 0:
            raise ValueError("simulation.new_ads_per_day_fraction must be > 0 (ads have finite lives)")
        rng = np.random.default_rng([self.seed, _TAG_WORLD])
        n, n_cat = self.n_users, len(CATEGORIES)
        self.age = rng.choice(len(AGE_BUCKETS), n, p=AGE_P)
        self.gender = rng.choice(len(GENDERS), n, p=GENDER_P)
        self.country = rng.choice(len(COUNTRIES), n, p=COUNTRY_P)
        self.device = rng.choice(len(DEVICES), n, p=DEVICE_P)
        offsets = np.cumsum([0] + [len(g) for g in OS_BY_DEVICE])
        sizes = np.array([len(g) for g in OS_BY_DEVICE])
        self.os = offsets[self.device] + (rng.random(n) * sizes[self.device]).astype(np.int64)
        # Interests lean on demographics so that age/gender generalise to users with little history.
        group_pref = rng.dirichlet(np.ones(n_cat), size=len(AGE_BUCKETS) * len(GENDERS))
        alpha = 1.5 * (0.3 / n_cat + 0.7 * group_pref[self.age * len(GENDERS) + self.gender])
        self.interest = _dirichlet_rows(rng, alpha)
        # user + cumulative interest is increasing over the flattened array: one searchsorted samples all
        self.interest_cum = (np.arange(n)[:, None] + np.cumsum(self.interest, axis=1)).ravel()
        self.activity = rng.lognormal(0.0, 1.6, n)  # heavy tail: a few users make most impressions
        self.user_bias = rng.normal(0.0, USER_BIAS_SD, n)
        span_ms = (SIGNUP_END - SIGNUP_START).days * DAY_MS
        self.signup_ms = day_ms(SIGNUP_START) + (rng.random(n) * span_ms).astype(np.int64)
        self.user_ids = np.char.add("u", np.arange(n).astype(str)).astype(object)

        a = self.n_advertisers
        self.adv_weight = rng.pareto(1.5, a) + 1.0
        self.adv_weight /= self.adv_weight.sum()
        self.adv_cat = rng.integers(0, n_cat, a)
        self.adv_bid = rng.lognormal(0.0, 0.6, a)
        self.adv_quality = rng.normal(0.0, 0.3, a)
        self.adv_campaigns = rng.integers(1, 5, a)
        self.adv_campaign_start = np.concatenate([[0], np.cumsum(self.adv_campaigns)[:-1]])
        self.advertiser_ids = np.char.add("adv", np.arange(a).astype(str)).astype(object)
        self.campaign_ids = np.char.add("c", np.arange(self.adv_campaigns.sum()).astype(str)).astype(object)

        context = np.random.default_rng([self.seed, _TAG_CONTEXT])
        self.category_peak_hour = context.integers(0, 24, n_cat)
        self.category_device = context.normal(0.0, CATEGORY_DEVICE_SD, (n_cat, len(DEVICES)))

        self.per_day = max(1, round(self.new_ads_fraction * self.n_ads))
        self.mean_life = self.n_ads / self.per_day
        self.max_life = math.ceil(4 * self.mean_life)

    def batch(self, day: dt.date) -> Ads:
        """The ads launched on ``day``; a pure function of (seed, day), cached."""
        key = day.toordinal()
        if key not in self._batches:
            self._batches[key] = self._draw_batch(day)
        return self._batches[key]

    def _draw_batch(self, day: dt.date) -> Ads:
        rng = np.random.default_rng([self.seed, _TAG_ADS, day.toordinal()])
        k = self.per_day
        adv = rng.choice(self.n_advertisers, k, p=self.adv_weight)
        camp = self.adv_campaign_start[adv] + (rng.random(k) * self.adv_campaigns[adv]).astype(np.int64)
        cat = np.where(rng.random(k) < 0.7, self.adv_cat[adv], rng.integers(0, len(CATEGORIES), k))
        bid = np.clip(np.round(self.adv_bid[adv] * rng.lognormal(0.0, 0.3, k), 2), 0.01, self.max_bid)
        budget = np.round(bid * rng.lognormal(math.log(500.0), 0.7, k), 2)
        life = np.minimum(1 + rng.exponential(self.mean_life, k).astype(np.int64), self.max_life)
        return Ads(
            num=day.toordinal() * k + np.arange(k, dtype=np.int64),  # unique across days, no anchor date
            adv=adv,
            camp=camp,
            cat=cat,
            video=rng.random(k) < 0.35,
            bid=bid,
            budget=budget,
            launch_ms=day_ms(day) + np.sort(rng.integers(0, DAY_MS, k)),
            life_days=life,
            quality=self.adv_quality[adv] + rng.normal(0.0, AD_QUALITY_SD, k),
        )

    def live_ads(self, day: dt.date) -> Ads:
        """Ads launched on or before ``day`` that still run on it (those of ``day`` launch during it)."""
        parts = []
        for back in range(self.max_life - 1, -1, -1):
            b = self.batch(day - dt.timedelta(days=back))
            parts.append(b.take(b.life_days > back))
        return Ads.concat(parts)


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Dirichlet draws with a different alpha per row (numpy's dirichlet takes one alpha)."""
    g = rng.standard_gamma(alpha)
    g = np.maximum(g, 1e-12)
    return g / g.sum(axis=1, keepdims=True)


def ad_ids(ads: Ads) -> np.ndarray:
    return np.char.add("a", ads.num.astype(str)).astype(object)


def pick_ads(
    rng: np.random.Generator, world: World, ads: Ads, user: np.ndarray, ts: np.ndarray, req: np.ndarray,
    start_ms: int,
) -> np.ndarray:  # fmt: skip
    """Mostly interest-targeted, bid-weighted ads, some random; only launched ads, no repeat in a request."""
    n_cat, n, n_ads = len(CATEGORIES), len(user), len(ads)
    by_cat = np.argsort(ads.cat, kind="stable")
    cat_sorted, w = ads.cat[by_cat], ads.bid[by_cat] ** 0.8
    total = np.bincount(cat_sorted, weights=w, minlength=n_cat)
    before = np.concatenate([[0.0], np.cumsum(total)[:-1]])
    # category + within-category cumulative weight increases over the whole array: one searchsorted
    cum = cat_sorted + (np.cumsum(w) - before[cat_sorted]) / np.where(total > 0, total, 1.0)[cat_sorted]
    cat_first = np.searchsorted(cat_sorted, np.arange(n_cat))
    cat_last = np.searchsorted(cat_sorted, np.arange(n_cat), side="right") - 1

    def draw(rows: np.ndarray) -> np.ndarray:
        u = user[rows]
        cat = np.searchsorted(world.interest_cum, u + rng.random(len(rows)), side="right") - u * n_cat
        cat = np.clip(cat, 0, n_cat - 1)
        j = np.searchsorted(cum, cat + rng.random(len(rows)), side="right")
        # clipping guards float round-off at category edges; empty categories fall back to random below
        j = np.clip(j, cat_first[cat], np.maximum(cat_last[cat], cat_first[cat]))
        targeted = by_cat[np.minimum(j, n_ads - 1)]
        use = (rng.random(len(rows)) < RELEVANT_SHARE) & (total[cat] > 0)
        return np.where(use, targeted, rng.integers(0, n_ads, len(rows)))

    ad = draw(np.arange(n))
    for _ in range(10):  # redraw the few invalid picks; a bounded number of vectorised rounds
        bad = np.flatnonzero((ads.launch_ms[ad] > ts) | _repeated_in_request(req, ad, n_ads))
        if len(bad) == 0:
            break
        ad[bad] = draw(bad)
    unlaunched = np.flatnonzero(ads.launch_ms[ad] > ts)
    old = np.flatnonzero(ads.launch_ms < start_ms)
    if len(unlaunched) and len(old):  # last resort: any ad launched before the day (a repeat in a request is tolerable)
        ad[unlaunched] = old[rng.integers(0, len(old), len(unlaunched))]
    return ad


def _repeated_in_request(req: np.ndarray, ad: np.ndarray, n_ads: int) -> np.ndarray:
    key = req.astype(np.int64) * n_ads + ad
    order = np.argsort(key, kind="stable")
    dup = np.zeros(len(key), dtype=bool)
    dup[order[1:]] = key[order[1:]] == key[order[:-1]]
    return dup


def earlier_exposures(user: np.ndarray, ad: np.ndarray) -> np.ndarray:
    """How often the user saw the ad earlier that day (rows are in time order)."""
    order = np.lexsort((np.arange(len(user)), ad, user))
    u, a = user[order], ad[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (a[1:] != a[:-1])
    idx = np.arange(len(order))
    seen = idx - np.maximum.accumulate(np.where(new, idx, 0))
    out = np.empty(len(order), dtype=np.int64)
    out[order] = seen
    return out


def interest_term(interest: np.ndarray) -> np.ndarray:
    return INTEREST_COEF * np.log(len(CATEGORIES) * interest + 0.1)


def base_terms(
    world: World, ads: Ads, user: np.ndarray, ad: np.ndarray, hour: np.ndarray, placement: np.ndarray
) -> dict[str, np.ndarray]:
    """The true click logit's terms that do not depend on the slot: they decide the legacy ranking."""
    cat, device = ads.cat[ad], world.device[user]
    return {
        "interest": interest_term(world.interest[user, cat]),
        "ad_quality": ads.quality[ad],
        "user_bias": world.user_bias[user],
        "context": HOUR_EFFECT[hour] + DEVICE_EFFECT[device] + PLACEMENT_EFFECT[placement]
        + CREATIVE_EFFECT[ads.video[ad].astype(np.int64), placement]
        + CATEGORY_HOUR_AMPLITUDE * np.cos(2 * np.pi * (hour - world.category_peak_hour[cat]) / 24)
        + world.category_device[cat, device],
    }  # fmt: skip


def slot_terms(user: np.ndarray, ad: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
    """The terms of the slot an ad was shown in (rows in time order): position and same-day fatigue."""
    return {
        "position": -POSITION_COEF * np.log(position),
        "fatigue": -FATIGUE_COEF * np.log1p(earlier_exposures(user, ad)),
    }


def solve_intercept(z: np.ndarray, target: float) -> float:
    """Newton's method for b with mean(sigmoid(b + z)) == target (monotone, converges in a few steps)."""
    b = math.log(target / (1 - target)) - float(np.median(z))
    for _ in range(50):
        p = sigmoid(b + z)
        step = (float(p.mean()) - target) / max(float((p * (1 - p)).mean()), 1e-12)
        b -= step
        if abs(step) < 1e-10:
            break
    return b


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
