"""The ranker's learning rate and embedding weight decay, chosen on the validation split by a small grid search.

Deterministic (every trial starts from the same seed and data) and bounded (the grid's size). Settings
are tried from the strongest regularisation to the weakest, and a tie goes to the earlier one: on data
too small or noisy to tell the settings apart, the search keeps the most regularised model.
"""

from __future__ import annotations

import itertools
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


def search(
    settings: Sequence[Setting],
    base: Hyperparameters,
    fit: Callable[[Hyperparameters], tuple[float, Fitted]],
    log: Callable[[str], None] = print,
) -> SearchResult[Fitted]:
    """Fit once per setting (``fit`` returns the validation log loss and what it fitted); keep the best."""
    if not settings:
        raise ValueError("no settings to search")
    trials: list[dict[str, Any]] = []
    best: tuple[float, Setting, Fitted] | None = None
    for setting in settings:
        val_logloss, fitted = fit(WithSetting(base, setting))
        trials.append({**asdict(setting), "val_logloss": val_logloss})
        log(f"search {asdict(setting)}: val_logloss {val_logloss:.5f}")
        if best is None or val_logloss < best[0]:
            best = (val_logloss, setting, fitted)
    assert best is not None
    return SearchResult(best[1], best[2], trials)
