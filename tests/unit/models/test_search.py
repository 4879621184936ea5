"""The grid search on the validation split: each setting once, the best validation loss wins, ties to the earlier."""

import pytest

from models.search import Setting, WithSetting, grid, search


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
    losses = {Setting(1e-3, 1e-4): 0.5, Setting(1e-3, 0.0): 0.4, Setting(3e-3, 0.0): 0.4}
    result = search(
        list(losses), cfg, lambda hp: (losses[Setting(hp.learning_rate, hp.embedding_weight_decay)], hp), log=print
    )
    assert result.best == Setting(1e-3, 0.0) and result.fitted.learning_rate == 1e-3
    assert [t["val_logloss"] for t in result.trials] == [0.5, 0.4, 0.4]
    with pytest.raises(ValueError, match="no settings"):
        search([], cfg, lambda hp: (0.0, hp))
