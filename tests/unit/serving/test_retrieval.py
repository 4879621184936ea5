import numpy as np
import pytest

from serving.retrieval import Exploration, Retrieval, new_ads, with_explored


def test_candidates_are_the_k_nearest_ads_nearest_first(tiny, index):
    retrieval = Retrieval(tiny.vector_tower, index, k=3)
    # ads 1, 5 and 9 point along axis 1, the later ones a little further
    assert retrieval.candidates("u1", {"vector": (0.0, 1.0, 0.0, 0.0)}).tolist() == [9, 5, 1]


def test_k_beyond_the_index_returns_every_ad(tiny, index):
    rows = Retrieval(tiny.vector_tower, index, k=100).candidates("u1", {"vector": (1.0, 1.0, 1.0, 1.0)})
    assert sorted(rows.tolist()) == list(range(tiny.N_ADS))


def test_the_user_tower_gets_a_batch_of_one_user(index):
    seen = {}

    def tower(inputs):
        seen.update(inputs)
        return np.array([[1.0, 0.0, 0.0, 0.0]])

    Retrieval(tower, index, k=2).candidates("u7", {"user_gender": "f", "user_ctr_7d": 0.25})
    assert seen["user_id"].tolist() == ["u7"] and seen["user_id"].dtype == object
    assert (seen["user_gender"], seen["user_ctr_7d"]) == (["f"], [0.25])


def test_an_index_that_finds_fewer_than_k_pads_nothing_into_the_candidates(tiny):
    import faiss

    # two inverted lists, one probed: only the ads of the probed list come back, FAISS pads with -1
    quantizer = faiss.IndexFlatL2(4)
    index = faiss.IndexIVFFlat(quantizer, 4, 2)
    index.train(np.array([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    index.add(tiny.AD_VECTORS)
    index.nprobe = 1
    rows = Retrieval(tiny.vector_tower, index, k=tiny.N_ADS).candidates("u1", {"vector": (1.0, 0.0, 0.0, 0.0)})
    assert 0 < len(rows) < tiny.N_ADS
    assert (rows >= 0).all()
    assert rows[0] == 0  # the nearest in L2


def test_new_ads_have_few_impressions_and_a_bid_that_can_pay_the_reserve(tiny, ads):
    assert new_ads(ads, tiny.RESERVE).tolist() == list(tiny.NEW_ADS)
    ads["ad_bid"][tiny.NEW_ADS[0]] = tiny.RESERVE / 2
    assert new_ads(ads, tiny.RESERVE).tolist() == list(tiny.NEW_ADS[1:])
    assert tiny.UNDER_RESERVE not in new_ads(ads, 0.0)  # an old ad, whatever the reserve


def test_exploration_picks_a_new_ad_with_probability_epsilon():
    always = Exploration(np.array([0, 4, 8]), epsilon=1.0, rng=np.random.default_rng(0))
    assert {always.pick() for _ in range(50)} == {0, 4, 8}
    sometimes = Exploration(np.array([0, 4, 8]), epsilon=0.3, rng=np.random.default_rng(0))
    explored = sum(sometimes.pick() is not None for _ in range(2000))
    assert 450 < explored < 750


@pytest.mark.parametrize("epsilon, candidates", [(0.0, (0, 4, 8)), (0.5, ())])
def test_without_exploration_no_random_number_is_drawn(epsilon, candidates):
    rng = np.random.default_rng(3)
    exploration = Exploration(np.array(candidates, dtype=np.int64), epsilon=epsilon, rng=rng)
    assert all(exploration.pick() is None for _ in range(5))
    assert rng.random() == np.random.default_rng(3).random()


def test_an_explored_ad_joins_the_candidates_once():
    rows = np.array([3, 1, 2])
    assert with_explored(rows, 8).tolist() == [3, 1, 2, 8]
    assert with_explored(rows, 1).tolist() == [3, 1, 2]
    assert with_explored(rows, None).tolist() == [3, 1, 2]
