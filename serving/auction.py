"""Serving rules and the generalized second-price auction, as pure functions over candidate arrays.

eCPM is per mille: ``ecpm = 1000 * bid * pctr`` is the expected revenue of 1,000 impressions of an
ad billed per click (CPC). Every array argument is aligned with the candidate list; functions
return candidate indices into it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

PER_MILLE = 1000.0


@dataclass(frozen=True)
class Placement:
    """One won slot: candidate ``index``, 1-based ``slot``, CPC ``price``; ``explore`` if placed by exploration."""

    index: int
    slot: int
    price: float
    explore: bool = False


def ecpm(bids: np.ndarray, pctr: np.ndarray) -> np.ndarray:
    """Expected revenue per 1,000 impressions of CPC-billed ads."""
    return PER_MILLE * np.asarray(bids, dtype=np.float64) * np.asarray(pctr, dtype=np.float64)


def auction_order(
    scores: np.ndarray, bids: np.ndarray, allowed: np.ndarray, reserve: float, advertisers: np.ndarray,
    max_per_advertiser: int, limit: int,
) -> np.ndarray:  # fmt: skip
    """Up to ``limit`` candidate indices by descending eCPM that pass the rules.

    Rules: ``allowed`` (the frequency cap), ``bid >= reserve`` (a CPC bid under the reserve can never
    pay it), at most ``max_per_advertiser`` ads per advertiser (greedy from the top, so an
    advertiser keeps its best ads). Ties keep candidate order (the retrieval order).
    """
    order = np.argsort(-scores, kind="stable")
    order = order[(allowed & (bids >= reserve))[order]]
    picked: list[int] = []
    per_advertiser: Counter[object] = Counter()
    for i in order:
        if per_advertiser[advertisers[i]] >= max_per_advertiser:
            continue
        per_advertiser[advertisers[i]] += 1
        picked.append(int(i))
        if len(picked) == limit:
            break
    return np.asarray(picked, dtype=np.int64)


def gsp_prices(
    ranked: np.ndarray, scores: np.ndarray, pctr: np.ndarray, bids: np.ndarray, reserve: float
) -> np.ndarray:
    """CPC prices of all but the last of ``ranked``: the least bid that keeps each ad above the next one.

    ``price_s = ecpm_{s+1} / (1000 * pctr_s)``, floored at the reserve. It never exceeds the ad's
    own bid (ranked by eCPM, ``ecpm_{s+1} <= ecpm_s = 1000 * bid_s * pctr_s``); the ``minimum``
    only absorbs floating-point error. The last ad has no runner-up and pays the reserve.
    """
    winners = ranked[:-1]
    # a pCTR of 0 has an eCPM of 0, and so has the runner-up: price 0, floored at the reserve
    runner_up = scores[ranked[1:]] / np.maximum(PER_MILLE * pctr[winners], np.finfo(np.float64).tiny)
    return np.minimum(np.maximum(runner_up, reserve), bids[winners])


def run_auction(
    pctr: np.ndarray, bids: np.ndarray, advertisers: np.ndarray, allowed: np.ndarray, *, slots: int,
    reserve: float, max_per_advertiser: int,
) -> list[Placement]:  # fmt: skip
    """Fill up to ``slots`` slots by eCPM under the rules, each winner paying its GSP price."""
    scores = ecpm(bids, pctr)
    ranked = auction_order(scores, bids, allowed, reserve, advertisers, max_per_advertiser, slots + 1)
    prices = np.append(gsp_prices(ranked, scores, pctr, bids, reserve), reserve)
    return [Placement(int(i), s + 1, float(prices[s])) for s, i in enumerate(ranked[:slots])]


def explore(
    placements: list[Placement], candidate: int, bids: np.ndarray, advertisers: np.ndarray, allowed: np.ndarray, *,
    slots: int, reserve: float, max_per_advertiser: int,
) -> list[Placement]:  # fmt: skip
    """Give the last slot to ``candidate`` (an ad to explore) at the reserve, if the rules let it in.

    The other winners keep their slots and prices: the displaced last winner is still the runner-up
    they were priced against. Unchanged if the candidate already won, is capped, bids under the
    reserve, or would exceed its advertiser's limit.
    """
    if any(p.index == candidate for p in placements) or not allowed[candidate] or bids[candidate] < reserve:
        return placements
    kept = placements if len(placements) < slots else placements[: slots - 1]
    if sum(advertisers[p.index] == advertisers[candidate] for p in kept) >= max_per_advertiser:
        return placements
    return [*kept, Placement(int(candidate), len(kept) + 1, float(reserve), explore=True)]
