import numpy as np
import pytest

from serving.auction import Placement, auction_order, ecpm, explore, gsp_prices, run_auction

RULES = {"reserve": 0.1, "max_per_advertiser": 1}


def arrays(bids, pctr, advertisers=None, allowed=None):
    n = len(bids)
    return (
        np.asarray(pctr, dtype=float),
        np.asarray(bids, dtype=float),
        np.asarray(advertisers if advertisers is not None else [f"adv{i}" for i in range(n)], dtype=object),
        np.asarray(allowed if allowed is not None else [True] * n, dtype=bool),
    )


def test_ecpm_is_per_mille_bid_times_pctr():
    np.testing.assert_allclose(ecpm(np.array([2.0, 0.5]), np.array([0.01, 0.1])), [20.0, 50.0])


def test_slots_are_filled_by_descending_ecpm_not_bid():
    pctr, bids, adv, ok = arrays(bids=[1.0, 3.0, 2.0, 0.5], pctr=[0.05, 0.01, 0.02, 0.2])  # ecpm 50, 30, 40, 100
    placements = run_auction(pctr, bids, adv, ok, slots=3, **RULES)
    assert [p.index for p in placements] == [3, 0, 2]
    assert [p.slot for p in placements] == [1, 2, 3]


def test_gsp_price_is_the_least_bid_that_keeps_the_rank():
    pctr, bids, adv, ok = arrays(bids=[1.0, 2.0, 2.0], pctr=[0.1, 0.04, 0.02])  # ecpm 100, 80, 40
    placements = run_auction(pctr, bids, adv, ok, slots=2, **RULES)
    # slot 1: 80 / (1000 * 0.1) = 0.8; slot 2: 40 / (1000 * 0.04) = 1.0 (priced against the first loser)
    np.testing.assert_allclose([p.price for p in placements], [0.8, 1.0])
    for p in placements:
        assert RULES["reserve"] <= p.price <= bids[p.index]


def test_last_ad_without_runner_up_pays_the_reserve():
    pctr, bids, adv, ok = arrays(bids=[1.0, 2.0], pctr=[0.1, 0.04])
    placements = run_auction(pctr, bids, adv, ok, slots=3, **RULES)
    assert len(placements) == 2
    np.testing.assert_allclose([p.price for p in placements], [0.8, 0.1])


def test_prices_are_floored_at_the_reserve_and_never_above_the_bid():
    pctr, bids, adv, ok = arrays(bids=[1.0, 0.2], pctr=[0.5, 0.001])  # runner-up would set a price of 0.0004
    placements = run_auction(pctr, bids, adv, ok, slots=1, **RULES)
    assert placements == [Placement(0, 1, 0.1)]
    # equal eCPMs: the winner pays exactly its bid (up to rounding), never more
    prices = gsp_prices(np.array([0, 1]), ecpm(np.array([1.0, 2.0]), np.array([0.1, 0.05])), np.array([0.1, 0.05]),
                        np.array([1.0, 2.0]), 0.1)  # fmt: skip
    assert prices[0] <= 1.0


def test_bids_under_the_reserve_are_out_even_with_the_best_ecpm():
    pctr, bids, adv, ok = arrays(bids=[0.05, 1.0], pctr=[0.9, 0.01])
    assert [p.index for p in run_auction(pctr, bids, adv, ok, slots=2, **RULES)] == [1]


def test_advertiser_diversity_keeps_each_advertisers_best_ads():
    pctr, bids, adv, ok = arrays(bids=[1.0] * 5, pctr=[0.5, 0.4, 0.3, 0.2, 0.1], advertisers=["x", "x", "y", "x", "z"])
    assert [p.index for p in run_auction(pctr, bids, adv, ok, slots=3, **RULES)] == [0, 2, 4]
    two = run_auction(pctr, bids, adv, ok, slots=3, reserve=0.1, max_per_advertiser=2)
    assert [p.index for p in two] == [0, 1, 2]


def test_diversity_also_shapes_the_runner_up_that_sets_the_price():
    # ecpm 500 (x), 400 (x, excluded), 100 (y): the winner is priced against y, not against its own advertiser
    pctr, bids, adv, ok = arrays(bids=[1.0, 1.0, 1.0], pctr=[0.5, 0.4, 0.1], advertisers=["x", "x", "y"])
    placements = run_auction(pctr, bids, adv, ok, slots=1, **RULES)
    np.testing.assert_allclose(placements[0].price, 100 / 500)


def test_capped_ads_are_skipped():
    pctr, bids, adv, ok = arrays(bids=[1.0, 1.0, 1.0], pctr=[0.5, 0.4, 0.3], allowed=[False, True, True])
    assert [p.index for p in run_auction(pctr, bids, adv, ok, slots=2, **RULES)] == [1, 2]


def test_ties_keep_candidate_order():
    pctr, bids, adv, ok = arrays(bids=[1.0, 1.0, 1.0], pctr=[0.2, 0.2, 0.2])
    assert list(auction_order(ecpm(bids, pctr), bids, ok, 0.1, adv, 1, 3)) == [0, 1, 2]


def test_no_eligible_candidates_gives_no_placements():
    pctr, bids, adv, ok = arrays(bids=[0.01], pctr=[0.5])
    assert run_auction(pctr, bids, adv, ok, slots=2, **RULES) == []


def test_exploration_takes_the_last_slot_at_the_reserve_and_keeps_other_prices():
    pctr, bids, adv, ok = arrays(bids=[1.0, 1.0, 1.0, 1.0], pctr=[0.5, 0.4, 0.3, 0.001])
    placements = run_auction(pctr, bids, adv, ok, slots=2, **RULES)
    explored = explore(placements, 3, bids, adv, ok, slots=2, **RULES)
    assert explored == [placements[0], Placement(3, 2, 0.1, explore=True)]
    # fewer winners than slots: the explored ad gets the next slot
    assert explore(placements, 3, bids, adv, ok, slots=3, **RULES)[-1] == Placement(3, 3, 0.1, explore=True)


@pytest.mark.parametrize(
    "case",
    ["already_won", "capped", "under_reserve", "advertiser_full"],
)
def test_exploration_respects_the_rules(case):
    advertisers = ["x", "y", "z", "x" if case == "advertiser_full" else "w"]
    allowed = [True, True, True, case != "capped"]
    bid_explored = 0.05 if case == "under_reserve" else 1.0
    pctr, bids, adv, ok = arrays([1.0, 1.0, 1.0, bid_explored], [0.5, 0.4, 0.3, 0.001], advertisers, allowed)
    placements = run_auction(pctr, bids, adv, ok, slots=2, **RULES)
    candidate = 0 if case == "already_won" else 3
    assert explore(placements, candidate, bids, adv, ok, slots=2, **RULES) == placements
