"""Drift of feature distributions between a reference sample (the training set) and a current one (what was served).

PSI, the population stability index ``sum((current - reference) * ln(current / reference))`` over the
shares of bins that the reference fixes: ``bins`` quantile bins of a numeric feature, the ``bins - 1`` most
frequent reference values and "other" of a categorical one. KS, the largest gap between the two empirical
distribution functions, for numeric features. Frames must hold spec dtypes (``models.frames.fill_defaults``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.features import Feature
from models.frames import as_strings

OTHER = "other"
# A bin that one side leaves empty would make PSI infinite; its share counts as this instead.
MIN_SHARE = 1e-4


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """The inner edges of ``bins`` equal-frequency bins of ``reference``: values it holds (no interpolation
    between them), tied quantiles merged (a mass of zeros is one bin)."""
    return np.unique(np.quantile(reference, np.arange(1, bins) / bins, method="inverted_cdf"))


def numeric_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def top_categories(reference: np.ndarray, bins: int) -> list[str]:
    """The ``bins - 1`` most frequent reference values (ties by value, so the bins do not depend on row order)."""
    counts = pd.Series(reference).value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [value for value, _ in ranked[: bins - 1]]


def category_shares(values: np.ndarray, categories: list[str]) -> np.ndarray:
    """Shares of ``values`` in each of ``categories``, then in every other value together."""
    index = pd.Index(categories).get_indexer(values)
    counts = np.bincount(np.where(index < 0, len(categories), index), minlength=len(categories) + 1)
    return counts / max(len(values), 1)


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    expected = np.maximum(reference_shares, MIN_SHARE)
    actual = np.maximum(current_shares, MIN_SHARE)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    reference, current = np.sort(reference), np.sort(current)
    points = np.concatenate([reference, current])
    gap = np.searchsorted(reference, points, side="right") / len(reference) - np.searchsorted(
        current, points, side="right"
    ) / len(current)
    return float(np.max(np.abs(gap)))


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[Feature], bins: int
) -> dict[str, dict[str, Any]]:
    """Per feature: ``kind``, ``psi``, ``ks`` (None for a categorical) and the bins with both sides' shares.

    Both frames must be non-empty and hold every feature in ``features``.
    """
    if reference.empty or current.empty:
        raise ValueError(f"drift needs rows on both sides: reference {len(reference)}, current {len(current)}")
    out: dict[str, dict[str, Any]] = {}
    for feature in features:
        if feature.categorical:
            ref, cur = as_strings(reference[feature.name].to_numpy()), as_strings(current[feature.name].to_numpy())
            categories = top_categories(ref, bins)
            labels = [*categories, OTHER]
            ref_shares, cur_shares = category_shares(ref, categories), category_shares(cur, categories)
            ks = None
        else:
            ref = reference[feature.name].to_numpy(np.float64)
            cur = current[feature.name].to_numpy(np.float64)
            edges = quantile_edges(ref, bins)
            labels = [f"<= {e:.4g}" for e in edges] + [f"> {edges[-1]:.4g}" if len(edges) else "all"]
            ref_shares, cur_shares = numeric_shares(ref, edges), numeric_shares(cur, edges)
            ks = ks_statistic(ref, cur)
        out[feature.name] = {
            "kind": "categorical" if feature.categorical else "numeric",
            "psi": psi(ref_shares, cur_shares),
            "ks": ks,
            "bins": labels,
            "reference_shares": [round(float(s), 6) for s in ref_shares],
            "current_shares": [round(float(s), 6) for s in cur_shares],
        }
    return out
