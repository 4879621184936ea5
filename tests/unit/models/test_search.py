"""The grid search on the validation split: each setting once, the best validation loss wins, ties to the earlier."""

import pytest

from models.search import Setting, WithSetting, grid, rungs, search


def test_the_grid_goes_from_the_strongest_regularisation_and_the_gentlest_rate(cfg):
    settings = grid((3e-3, 1e-3), (0.0, 1e-4))
    assert settings == [Setting(1e-3, 1e-4), Setting(3e-3, 1e-4), Setting(1e-3, 0.0), Setting(3e-3, 0.0)]
    chosen = WithSetting(cfg, settings[0])
    assert (chosen.learning_rate, chosen.embedding_weight_decay, chosen.embedding_dim) == (
        1e-3,
        1e-4,
        cfg.embedding_dim,
    )


def test_the_best_validation_loss_wins_and_a_tie_keeps_the_earlier_setting(cfg):
    cfg = cfg.model_copy(update={"epochs": 1})
    losses = {Setting(1e-3, 1e-4): 0.5, Setting(1e-3, 0.0): 0.4, Setting(3e-3, 0.0): 0.4}
    result = search(
        list(losses),
        cfg,
        lambda hp, epochs: (losses[Setting(hp.learning_rate, hp.embedding_weight_decay)], hp, {"best_epoch": 1}),
        log=print,
    )
    assert result.best == Setting(1e-3, 0.0) and result.fitted.learning_rate == 1e-3
    assert [t["val_logloss"] for t in result.trials] == [0.5, 0.4, 0.4]
    assert all(t["best_epoch"] == 1 for t in result.trials)
    with pytest.raises(ValueError, match="no settings"):
        search([], cfg, lambda hp, epochs: (0.0, hp, {}))


def test_successive_halving_trains_the_better_half_on_until_one_setting_has_every_epoch(cfg):
    """Six settings, six epochs: budgets 1, 2, 4, 6; the loss of a setting falls by its rate each epoch."""
    assert rungs(6) == [1, 2, 4, 6] and rungs(2) == [1, 2] and rungs(1) == [1]
    settings = grid((1e-3, 2e-3, 3e-3), (0.0, 0.1))
    trained: dict[Setting, int] = dict.fromkeys(settings, 0)

    def fit(hp, epochs):
        setting = Setting(hp.learning_rate, hp.embedding_weight_decay)
        trained[setting] = epochs  # the loop goes on from where the previous call stopped
        return 1.0 - epochs * hp.learning_rate - hp.embedding_weight_decay / 100, setting, {}

    result = search(settings, cfg.model_copy(update={"epochs": 6}), fit, log=print)
    assert result.best == Setting(3e-3, 0.1) == result.fitted
    assert sorted(trained.values()) == [1, 1, 1, 2, 4, 6]  # 15 epochs in all, not 36
    assert {t["epochs_budget"] for t in result.trials if t["learning_rate"] == 3e-3} == {4, 6}
