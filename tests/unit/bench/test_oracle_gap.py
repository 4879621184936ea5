import numpy as np
import pytest

from bench import oracle_gap
from core.config import load_config


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg = load_config(home=tmp_path_factory.mktemp("gap"))
    return oracle_gap.run(cfg, "tiny", "2026-11-06", [1, 4])


def test_the_terms_are_all_of_the_simulators_logit() -> None:
    """What is left of the true logit after the terms is one constant: no term of the simulator is missed."""
    from simulator import world as sw

    cfg = load_config()
    users, ads, advertisers, impressions = cfg.simulation.scales["tiny"]
    world = sw.World(cfg.simulation.seed, users, ads, advertisers, cfg.simulation.new_ads_per_day_fraction, 100.0)
    day = oracle_gap.day_terms(world, cfg, "2026-11-06", impressions)
    assert len(day["label"]) == impressions
    assert day["intercept"].std() < 1e-6


def test_estimating_latent_terms_never_beats_knowing_them(result: dict) -> None:
    for days in (1, 4):
        bounds = result[f"history_{days}d"]
        assert all(0.5 < auc <= result["oracle_auc"] for auc in bounds.values()), bounds
        assert bounds["all_estimated"] <= min(v for k, v in bounds.items() if k.startswith("only_"))


def test_more_history_gives_better_estimates(result: dict) -> None:
    assert result["history_4d"]["all_estimated"] > result["history_1d"]["all_estimated"]


@pytest.mark.parametrize("interactions", [True, False])
def test_the_additive_ceiling_misses_the_interactions(monkeypatch: pytest.MonkeyPatch, interactions: bool) -> None:
    """A first-order model with every latent term known falls short of the oracle only by the world's interactions."""
    from models.metrics import auc
    from simulator import world as sw

    if not interactions:
        monkeypatch.setattr(sw, "CATEGORY_HOUR_AMPLITUDE", 0.0)
        monkeypatch.setattr(sw, "CATEGORY_DEVICE_SD", 0.0)
        monkeypatch.setattr(sw, "CREATIVE_EFFECT", np.zeros_like(sw.CREATIVE_EFFECT))
    cfg = load_config()
    users, ads, advertisers, _ = cfg.simulation.scales["tiny"]
    world = sw.World(cfg.simulation.seed, users, ads, advertisers, cfg.simulation.new_ads_per_day_fraction, 100.0)
    fit_day, day = (oracle_gap.day_terms(world, cfg, ds, 200_000) for ds in ("2026-11-05", "2026-11-06"))
    shortfall = auc(day["label"], oracle_gap._logit(day)) - oracle_gap.additive_ceiling(fit_day, day)
    # without interactions the shortfall is the noise of ~70 coefficients fitted on one tiny day
    assert shortfall > 0.008 if interactions else abs(shortfall) < 0.004
