"""The ranker's learning rate and embedding weight decay, chosen on the validation split by a small grid search.

Deterministic (every trial starts from the same seed and data) and bounded (the grid's size, trained by
successive halving). Settings are tried from the strongest regularisation to the weakest, and a tie goes
to the earlier one: on data too small or noisy to tell the settings apart, the search keeps the most
regularised model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from models.hyperparameters import Hyperparameters

Fitted = TypeVar("Fitted")


@dataclass(frozen=True)
class Setting:
    learning_rate: float
    embedding_weight_decay: float


class WithSetting:
    """``base`` hyperparameters with a setting's values in place of its own."""

    def __init__(self, base: Hyperparameters, setting: Setting) -> None:
        self._base, self._setting = base, setting

    def __getattr__(self, name: str) -> Any:
        if name in Setting.__dataclass_fields__:
            return getattr(self._setting, name)
        return getattr(self._base, name)


def grid(learning_rates: Sequence[float], weight_decays: Sequence[float]) -> list[Setting]:
    """Every combination, strongest decay first, then the smaller learning rate first (the gentler fit)."""
    pairs = itertools.product(sorted(weight_decays, reverse=True), sorted(learning_rates))
    return [Setting(learning_rate=lr, embedding_weight_decay=decay) for decay, lr in pairs]


@dataclass(frozen=True)
class SearchResult(Generic[Fitted]):
    best: Setting
    fitted: Fitted
    trials: list[dict[str, Any]]


def rungs(epochs: int) -> list[int]:
    """Successive halving's training budgets, in epochs: 1, 2, 4, ... and then all ``epochs``."""
    budgets = []
    budget = 1
    while budget < epochs:
        budgets.append(budget)
        budget *= 2
    return [*budgets, epochs]


def search(
    settings: Sequence[Setting],
    base: Hyperparameters,
    fit: Callable[[Hyperparameters, int], tuple[float, Fitted, dict[str, Any]]],
    log: Callable[[str], None] = print,
) -> SearchResult[Fitted]:
    """Successive halving over ``settings``: every setting trains for the first budget of ``rungs(base.epochs)``,
    the better half goes on to the next, and so on; the best at the last budget wins.

    ``fit(hyperparameters, epochs)`` trains a setting up to ``epochs`` in all, going on from where its
    previous call stopped (the training loop's checkpoints), and returns the best validation log loss so
    far, what it fitted and what else the trial's record shows (for example its best epoch). A setting
    that early stopping ended is not trained again. Whole training runs for every setting would cost
    ``len(settings)`` runs; this costs about three (six settings, six epochs: 15 epochs in all).
    """
    if not settings:
        raise ValueError("no settings to search")
    order = {setting: i for i, setting in enumerate(settings)}
    trials: dict[Setting, dict[str, Any]] = {}
    alive = list(settings)
    for budget in rungs(base.epochs):
        best: tuple[float, Setting, Fitted] | None = None
        losses = {}
        for setting in alive:
            val_logloss, fitted, details = fit(WithSetting(base, setting), budget)
            trials[setting] = {**asdict(setting), "val_logloss": val_logloss, "epochs_budget": budget, **details}
            log(f"search {asdict(setting)} up to epoch {budget}: val_logloss {val_logloss:.5f}")
            losses[setting] = val_logloss
            if best is None or val_logloss < best[0]:
                best = (val_logloss, setting, fitted)
        # ties go to the earlier setting in the grid: the more regularised
        better_half = sorted(alive, key=lambda setting: (losses[setting], order[setting]))[: math.ceil(len(alive) / 2)]
        alive = sorted(better_half, key=order.__getitem__)
    assert best is not None
    return SearchResult(best[1], best[2], [trials[setting] for setting in settings])
