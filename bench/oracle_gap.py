"""How close to the oracle AUC any model can get on the simulated world, given the history it sees.

The true click logit of an impression is a sum of terms (``simulator.traffic.simulate_day``). Three are
latent per entity and can only be estimated from logged history: the user's bias, the ad's quality
and the user's interest in the ad's category. This replaces one or all of them by their best
estimate from ``history`` earlier days, with every other term (context, position, fatigue) known
exactly, and reports the AUC on the evaluated day. It is a reference for the distance to the oracle
that the history alone explains, not a strict bound: a learned model may also read the latent terms
off signals these estimators ignore (the legacy server's slot order, bid-weighted targeting).

Estimates are posterior means under the simulator's own priors (gamma moments of the exp-terms;
Poisson clicks): user bias and ad quality (prior: its advertiser) from the entity's clicks against
its expected clicks; interest from the share of the user's impressions the targeting put in the
category (the legacy server draws categories in proportion to interest), from all impressions or
from the downsampled rows the pipeline keeps (every click, ``neg_rate`` of the rest).

It also reports the additive ceiling (``additive_ceiling``): the best first-order model with every
latent term known, i.e. how much of the oracle only field interactions can reach.

``python -m bench.oracle_gap [--scale small] [--ds 2026-11-06] [--history 3,8]`` writes
``bench/results/oracle-gap-<scale>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.run import run_info
from core.config import PctrConfig, load_config
from core.io import write_json_atomic
from models.metrics import auc
from simulator import traffic
from simulator import world as sw

RESULTS = Path(__file__).resolve().parent / "results"
LATENT = ("user_bias", "ad_quality", "interest")


def day_terms(world: sw.World, cfg: PctrConfig, ds: str, impressions: int) -> dict[str, np.ndarray]:
    """Labels, keys and the logit terms of every impression of ds (``intercept`` closes the sum)."""
    log = traffic.simulate_day(world, cfg, ds, cfg.simulation.seed, impressions)
    user, ads, ad = log.user, log.ads, log.ad
    hour = (log.imp_ms - sw.day_ms(dt.date.fromisoformat(ds))) // traffic.HOUR_MS
    terms = sw.base_terms(world, ads, user, ad, hour, log.placement)
    slot = sw.slot_terms(user, ad, log.position)
    terms["known"] = terms.pop("context") + slot["position"] + slot["fatigue"]
    logit = np.log(log.p_click) - np.log1p(-log.p_click)
    terms["intercept"] = logit - sum(terms.values())
    return {
        **terms, "label": (log.click_ms >= 0).astype(np.float64), "user": user, "ad": ads.num[ad],
        "advertiser": ads.adv[ad], "category": ads.cat[ad], "hour": hour, "device": world.device[user],
        "placement": log.placement, "creative": ads.video[ad].astype(np.int64), "position": log.position,
        "fatigue": slot["fatigue"],
    }  # fmt: skip


def additive_ceiling(fit_day: dict[str, np.ndarray], day: dict[str, np.ndarray]) -> float:
    """AUC on ``day`` of the best first-order model that knows every latent term exactly.

    A logistic regression on one-hot hour, device, placement, creative, category and position plus
    the exact user bias, ad quality, interest and fatigue terms, fitted on ``fit_day`` (an earlier
    day). What it misses of the oracle is the world's interactions (creative x placement, category x
    hour, category x device): the most a model with field crosses can gain over a first-order one.
    """
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    def design(d: dict[str, np.ndarray]) -> sparse.csr_matrix:
        rows = np.arange(len(d["label"]))
        fields = [d["hour"], d["device"], d["placement"], d["creative"], d["category"], d["position"] - 1]
        # positions run 1..max(MAX_SLOTS)
        sizes = (24, len(sw.DEVICES), len(sw.PLACEMENTS), len(sw.CREATIVES), len(sw.CATEGORIES), max(sw.MAX_SLOTS))
        one_hot = [
            sparse.csr_matrix((np.ones(len(rows)), (rows, f)), shape=(len(rows), size))
            for f, size in zip(fields, sizes, strict=True)
        ]
        exact = sparse.csr_matrix(np.column_stack([d[t] for t in (*LATENT, "fatigue")]))
        return sparse.hstack([*one_hot, exact]).tocsr()

    model = LogisticRegression(C=10.0, max_iter=300).fit(design(fit_day), fit_day["label"])
    return auc(day["label"], model.decision_function(design(day)))


def _logit(day: dict[str, np.ndarray], replaced: dict[str, np.ndarray] | None = None) -> np.ndarray:
    values = {**{t: day[t] for t in (*LATENT, "known", "intercept")}, **(replaced or {})}
    return sum(values.values())


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` summed by ``keys``, read at ``wanted`` (0 where a key never occurred)."""
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse, values)
    at = np.minimum(np.searchsorted(unique, wanted), len(unique) - 1)
    return np.where(unique[at] == wanted, sums[at], 0.0)


def _gamma_posterior_log(clicks: np.ndarray, exposure: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """log E[X | clicks] for X ~ Gamma(mean, var) and clicks ~ Poisson(X * exposure)."""
    return np.log((mean**2 / var + clicks) / (mean / var + exposure))


def _lognormal_moments(mu: np.ndarray, sd: float) -> tuple[np.ndarray, np.ndarray]:
    mean = np.exp(mu + sd**2 / 2)
    return mean, (np.exp(sd**2) - 1) * mean**2


def estimates(world: sw.World, history: dict[str, np.ndarray], day: dict[str, np.ndarray], neg_rate: float) -> dict:
    """Posterior-mean estimates of each latent term of ``day``'s impressions from ``history``."""
    out: dict[str, np.ndarray] = {}
    for term, key, (mean, var) in (
        ("user_bias", "user", _lognormal_moments(np.zeros(len(day["user"])), sw.USER_BIAS_SD)),
        ("ad_quality", "ad", _lognormal_moments(world.adv_quality[day["advertiser"]], sw.AD_QUALITY_SD)),
    ):
        expected = np.exp(_logit(history) - history[term])  # expected clicks without the term (p is small)
        clicks = _lookup(history[key], history["label"], day[key])
        exposure = _lookup(history[key], expected, day[key])
        out[term] = _gamma_posterior_log(clicks, exposure, mean, var)

    # interest: the category's share of the user's impressions, shrunk towards the user's age x gender group
    n_cat = len(sw.CATEGORIES)
    group = world.age * len(sw.GENDERS) + world.gender
    groups = range(len(sw.AGE_BUCKETS) * len(sw.GENDERS))
    group_interest = np.stack(
        [world.interest[group == g].mean(axis=0) if (group == g).any() else np.full(n_cat, 1 / n_cat) for g in groups]
    )
    prior = group_interest[group[day["user"]], day["category"]]
    kept = (history["label"] > 0) | (np.random.default_rng(0).random(len(history["label"])) < neg_rate)
    for name, rows, weight in (
        ("interest", slice(None), np.ones(len(history["label"]))),
        ("interest_from_downsampled", kept, np.where(history["label"] > 0, 1.0, 1.0 / neg_rate)),
    ):
        pair_key = history["user"][rows] * n_cat + history["category"][rows]
        in_pair = _lookup(pair_key, weight[rows], day["user"] * n_cat + day["category"])
        of_user = _lookup(history["user"][rows], weight[rows], day["user"])
        share = (in_pair / sw.RELEVANT_SHARE + 5.0 * prior) / (of_user / sw.RELEVANT_SHARE + 5.0)
        out[name] = sw.interest_term(np.clip(share, 1e-4, 1.0))
    return out


def run(cfg: PctrConfig, scale: str, ds: str, history_days: list[int]) -> dict[str, Any]:
    users, n_ads, advertisers, impressions = cfg.simulation.scales[scale]
    world = sw.World(cfg.simulation.seed, users, n_ads, advertisers, cfg.simulation.new_ads_per_day_fraction,
                     cfg.join.max_bid)  # fmt: skip
    day = day_terms(world, cfg, ds, impressions)
    label = day["label"]
    result: dict[str, Any] = {
        "scale": scale,
        "ds": ds,
        "impressions": len(label),
        "oracle_auc": auc(label, _logit(day)),
    }
    earlier = {
        d: day_terms(world, cfg, (dt.date.fromisoformat(ds) - dt.timedelta(days=d)).isoformat(), impressions)
        for d in range(1, max(history_days) + 1)
    }
    result["additive_ceiling_auc"] = round(additive_ceiling(earlier[1], day), 4)
    for days in history_days:
        history = {k: np.concatenate([earlier[d][k] for d in range(days, 0, -1)]) for k in day}
        est = estimates(world, history, day, cfg.join.neg_rate)
        bounds = {f"only_{term}_estimated": auc(label, _logit(day, {term: est[term]})) for term in LATENT}
        bounds["all_estimated"] = auc(label, _logit(day, {t: est[t] for t in LATENT}))
        downsampled = {**{t: est[t] for t in LATENT}, "interest": est["interest_from_downsampled"]}
        bounds["all_estimated_interest_from_downsampled_rows"] = auc(label, _logit(day, downsampled))
        result[f"history_{days}d"] = {k: round(v, 4) for k, v in bounds.items()}
    result["oracle_auc"] = round(result["oracle_auc"], 4)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--ds", default="2026-11-06", help="the evaluated day (the demo's holdout day)")
    parser.add_argument("--history", default="3,8", help="comma-separated days of history to estimate from")
    args = parser.parse_args(argv)
    result = run(load_config(), args.scale, args.ds, [int(d) for d in args.history.split(",")]) | run_info()
    write_json_atomic(RESULTS / f"oracle-gap-{args.scale}.json", result)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
