"""Fresh ads on tiny real parts: the merge of a current ads table into the served pair, the engine's swap, and
the current ads read from a listing, a catalog and a sqlite Feast store.

Ad i of the bundle points along axis i % 4 (``AD_VECTORS``); every user here looks along axis 3, where
the bundle has a3, a7 and a11. The stand-in ad tower embeds every ad it is given at twice that axis:
a new ad it embeds is the nearest of all.
"""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from core.layout import Layout
from models.features import AD_TABLE_COLUMNS, BY_NAME, batch_features, tower_features
from serving.fresh_ads import CurrentAds, merge_ads
from serving.request_features import OnlineFeatures

NOW = dt.datetime(2026, 11, 20, 9, 15, tzinfo=dt.UTC)
AXIS = 3
NEW_AD = "a12"


def along_axis(inputs):
    """Every user looks along ``AXIS``."""
    return np.eye(4, dtype=np.float32)[[AXIS]]


class AlongAxisAdTower:
    """Embeds each ad at twice ``AXIS``; keeps the inputs of its calls."""

    def __init__(self, dim=4):
        self.dim = dim
        self.calls = []

    def __call__(self, inputs):
        self.calls.append(dict(inputs))
        return np.tile(2.0 * np.eye(self.dim, dtype=np.float32)[AXIS % self.dim], (len(inputs["ad_id"]), 1))


class AdCtrScorer:
    """pCTR = the ad's 7-day CTR + 0.01; ``during`` runs while it scores (a refresh mid-request)."""

    during = None

    def predict(self, columns):
        if self.during is not None:
            self.during()
        return 0.01 + np.asarray(columns["ad_ctr_7d"], dtype=np.float64)


def current_with_new_ad(tiny, **values):
    """The bundle's ads as they are now: the same, plus NEW_AD (adv9, a 0.5 CTR, a bid of 3) and ``values``."""
    ads = tiny.make_ads()
    new = {name: column[:1].copy() for name, column in ads.items()}
    new |= {"ad_id": np.array([NEW_AD], dtype=object), "advertiser_id": np.array(["adv9"], dtype=object)}
    new |= {"campaign_id": np.array(["c-new"], dtype=object), "ad_bid": np.array([3.0])}
    new["ad_ctr_7d"] = np.array([0.5], dtype=np.float32)
    current = {name: np.concatenate([ads[name], new[name]]) for name in ads}
    return current | values


@pytest.fixture
def make_engine(build_engine):
    def make(ad_tower=None, **serving):
        return build_engine(
            along_axis, AdCtrScorer(), ad_tower=ad_tower, built_at=1000.0, **{"retrieval_k": 3} | serving
        )

    return make


def candidate_ids(engine):
    return engine.ads["ad_id"][engine.retrieval.candidates("u2", {})].tolist()


def test_an_ad_launched_after_the_publish_is_embedded_retrieved_and_ranked_after_a_refresh(tiny, make_engine):
    tower = AlongAxisAdTower()
    engine = make_engine(ad_tower=tower)
    assert candidate_ids(engine) == ["a11", "a7", "a3"]
    before = engine.rank("u2", {}, 1, request_time=NOW)
    assert before["ads"][0]["ad_id"] != NEW_AD

    merged = engine.refresh_ads(current_with_new_ad(tiny), now=2000.0)
    assert (merged.added, merged.dropped, merged.pending) == ((NEW_AD,), (), ())
    assert [call["ad_id"].tolist() for call in tower.calls] == [[NEW_AD]]  # only the new ad is embedded
    assert set(tower.calls[0]) == {f.name for f in tower_features("ad")}
    assert tower.calls[0]["ad_ctr_7d"].tolist() == [0.5]  # from its current features
    assert engine.ads["ad_id"].tolist() == [*tiny.make_ads()["ad_id"], NEW_AD]  # appended: row 12 = FAISS id 12
    np.testing.assert_allclose(engine.retrieval.index.reconstruct(12), 2.0 * np.eye(4)[AXIS])
    assert candidate_ids(engine) == [NEW_AD, "a11", "a7"]
    result = engine.rank("u2", {}, 1, request_time=NOW)
    assert (result["ads"][0]["ad_id"], result["ads"][0]["bid"]) == (NEW_AD, 3.0)
    assert (engine.side.ads_at, engine.side.index_at) == (2000.0, 2000.0)


def test_a_refresh_drops_unlisted_ads_and_serves_the_current_bids(tiny, make_engine, index):
    engine = make_engine(ad_tower=AlongAxisAdTower())
    live_index = engine.retrieval.index
    current = tiny.make_ads()
    keep = current["ad_id"] != "a7"
    current = {name: values[keep] for name, values in current.items()}
    current["ad_bid"] = current["ad_bid"] * 2.0
    merged = engine.refresh_ads(current, now=2000.0)
    assert (merged.added, merged.dropped) == ((), ("a7",))
    assert "a7" not in engine.ads["ad_id"]
    assert candidate_ids(engine)[:2] == ["a11", "a3"]  # the others are all as far (orthogonal)
    np.testing.assert_allclose(engine.ads["ad_bid"], current["ad_bid"])
    for row, ad_id in enumerate(engine.ads["ad_id"]):  # the kept ads keep their vectors, at their new rows
        np.testing.assert_allclose(engine.retrieval.index.reconstruct(row), tiny.AD_VECTORS[int(ad_id[1:])])
    assert live_index.ntotal == tiny.N_ADS  # the old index was copied, never written

    unchanged = engine.refresh_ads(current, now=3000.0)
    assert unchanged.index is engine.retrieval.index == merged.index  # nothing added or dropped: the same index


def test_without_an_ad_tower_new_ads_wait_and_the_index_grows_old(tiny, make_engine):
    engine = make_engine(ad_tower=None)
    merged = engine.refresh_ads(current_with_new_ad(tiny, ad_bid=np.full(tiny.N_ADS + 1, 0.9)), now=2000.0)
    assert (merged.added, merged.pending) == ((), (NEW_AD,))
    assert NEW_AD not in engine.ads["ad_id"] and engine.retrieval.index.ntotal == tiny.N_ADS
    np.testing.assert_allclose(engine.ads["ad_bid"], 0.9)  # the others' current values are served all the same
    assert (engine.side.ads_at, engine.side.index_at) == (2000.0, 1000.0)


@pytest.mark.parametrize(
    "tower, current, message",
    [
        (AlongAxisAdTower(dim=3), lambda tiny: current_with_new_ad(tiny), r"embeddings of shape \(3,\)"),
        (AlongAxisAdTower(), lambda tiny: {k: v[:0] for k, v in tiny.make_ads().items()}, "is empty"),
        (AlongAxisAdTower(), lambda tiny: {k: np.tile(v, 2) for k, v in tiny.make_ads().items()}, "lists an ad twice"),
    ],
)
def test_a_failed_refresh_keeps_the_live_table_and_index(tiny, make_engine, tower, current, message):
    engine = make_engine(ad_tower=tower)
    side = engine.side
    with pytest.raises(ValueError, match=message):
        engine.refresh_ads(current(tiny), now=2000.0)
    assert engine.side is side and side.retrieval.index.ntotal == tiny.N_ADS
    assert candidate_ids(engine) == ["a11", "a7", "a3"]
    assert engine.rank("u2", {}, 2, request_time=NOW)["ads"]


def test_a_request_in_flight_keeps_the_pair_it_started_with(tiny, make_engine):
    engine = make_engine(ad_tower=AlongAxisAdTower())
    doubled = tiny.make_ads()
    doubled["ad_bid"] = doubled["ad_bid"] * 2.0
    engine.scorer.during = lambda: engine.refresh_ads(doubled)  # swaps a new table in between scoring and auction
    result = engine.rank("u2", {}, 2, request_time=NOW)
    ads = tiny.make_ads()
    for ad in result["ads"]:
        assert ad["bid"] == ads["ad_bid"][int(ad["ad_id"][1:])]  # the bids of the table it retrieved from
    assert engine.ads["ad_bid"].tolist() == doubled["ad_bid"].tolist()


def test_merge_reads_the_live_pair_only(tiny, index):
    live = tiny.make_ads()
    merged = merge_ads(live, index, current_with_new_ad(tiny), AlongAxisAdTower())
    assert merged.index is not index and index.ntotal == tiny.N_ADS and merged.index.ntotal == tiny.N_ADS + 1
    assert live["ad_id"].tolist() == tiny.make_ads()["ad_id"].tolist()


def _write_current_ads(home, store, ds, listed, catalogued, online_ads, advertisers):
    """The listing (ad features partition of ``ds``), the catalog of ``ds`` and online values, as the pipeline has."""
    from feature_repo.definitions import view_name

    layout = Layout(home)
    layout.feature_files("ad", ds).mkdir(parents=True)
    pd.DataFrame({"ad_id": listed, "ad_bid": 0.0}).to_parquet(layout.feature_files("ad", ds) / "part-0.parquet")
    layout.catalog("ads").joinpath(f"dt={ds}").mkdir(parents=True)
    catalog = pd.DataFrame(catalogued, columns=["ad_id", "advertiser_id", "campaign_id"])
    catalog["valid_from"] = pd.Timestamp(ds, tz="UTC")
    catalog.to_parquet(layout.catalog("ads") / f"dt={ds}" / "part-0.parquet")
    ts = pd.Timestamp(dt.datetime.now(dt.UTC)).floor("s")
    for entity, rows in (("ad", online_ads), ("advertiser", advertisers)):
        if not rows:
            continue
        frame = pd.DataFrame(rows).assign(event_timestamp=ts, created_timestamp=ts)
        store.write_to_online_store(view_name(entity), frame)


def _online_row(entity, value, **values):
    """Online values of one ad or advertiser: ``value`` for every number, ``<feature>-x`` for every string."""
    row = {f.name: (f"{f.name}-x" if f.dtype == "string" else value) for f in batch_features(entity)}
    return row | values


def test_the_current_ads_are_the_listed_catalogued_ones_with_their_online_values(tmp_path, feast_store):
    ds = "2026-11-19"
    _write_current_ads(
        tmp_path, feast_store, ds,
        listed=["fresh-1", "fresh-2", "fresh-3", "fresh-4"],
        catalogued=[("fresh-1", "fresh-adv", "c1"), ("fresh-2", "fresh-adv-unknown", "c2"), ("fresh-3", "x", "c3")],
        online_ads=[_online_row("ad", 0.25, ad_id="fresh-1", ad_bid=1.5),
                    _online_row("ad", 0.5, ad_id="fresh-2", ad_bid=0.7),
                    _online_row("ad", 0.75, ad_id="fresh-4", ad_bid=0.9)],  # listed but not catalogued
        advertisers=[_online_row("advertiser", 0.125, advertiser_id="fresh-adv")],
    )  # fmt: skip
    old = Layout(tmp_path).feature_files("ad", "2026-11-18")
    old.mkdir(parents=True)
    pd.DataFrame({"ad_id": ["fresh-9"]}).to_parquet(old / "part-0.parquet")  # an older listing: not read

    ads = CurrentAds(Layout(tmp_path), OnlineFeatures(feast_store)).read()
    assert set(ads) == set(AD_TABLE_COLUMNS)
    assert ads["ad_id"].tolist() == ["fresh-1", "fresh-2"]  # fresh-3: the online store does not know it
    assert ads["ad_bid"].tolist() == [1.5, 0.7] and ads["ad_ctr_7d"].tolist() == [0.25, 0.5]
    assert ads["campaign_id"].tolist() == ["c1", "c2"]
    assert ads["advertiser_ctr_7d"].tolist() == [0.125, BY_NAME["advertiser_ctr_7d"].default]
    assert ads["ad_category"].tolist() == ["ad_category-x"] * 2


def test_no_listing_or_no_known_ad_is_an_error(tmp_path, feast_store):
    with pytest.raises(FileNotFoundError, match="no ad features"):
        CurrentAds(Layout(tmp_path), OnlineFeatures(feast_store)).read()
    _write_current_ads(
        tmp_path, feast_store, "2026-11-19", listed=["fresh-unknown"], catalogued=[("fresh-unknown", "adv", "c")],
        online_ads=[_online_row("ad", 0.5, ad_id="fresh-other")], advertisers=[],
    )  # fmt: skip
    with pytest.raises(ValueError, match="knows none of the 1 ads"):
        CurrentAds(Layout(tmp_path), OnlineFeatures(feast_store)).read()


def test_online_entities_are_read_in_chunks_with_whether_feast_knew_each(feast_store):
    from feature_repo.definitions import view_name

    ts = pd.Timestamp(dt.datetime.now(dt.UTC)).floor("s")
    rows = [_online_row("ad", float(i), ad_id=f"chunked-{i}") for i in range(3)]
    feast_store.write_to_online_store(
        view_name("ad"), pd.DataFrame(rows).assign(event_timestamp=ts, created_timestamp=ts)
    )
    values, known = OnlineFeatures(feast_store).entities(
        "ad", ["chunked-2", "nobody", "chunked-0", "chunked-1"], chunk=2
    )
    assert known.tolist() == [True, False, True, True]
    assert values["ad_ctr_7d"] == [2.0, None, 0.0, 1.0]


def test_an_hnsw_index_is_copied_with_its_parameters(tiny):
    import faiss

    hnsw = faiss.IndexHNSWFlat(4, 8, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = 40
    hnsw.add(tiny.AD_VECTORS)
    current = current_with_new_ad(tiny)
    keep = current["ad_id"] != "a7"
    merged = merge_ads(tiny.make_ads(), hnsw, {k: v[keep] for k, v in current.items()}, AlongAxisAdTower())
    assert (merged.added, merged.dropped) == ((NEW_AD,), ("a7",))
    assert isinstance(merged.index, faiss.IndexHNSWFlat) and merged.index.hnsw.efSearch == 40
    _, ids = merged.index.search(along_axis({}), 2)
    assert merged.ads["ad_id"][ids[0]].tolist() == [NEW_AD, "a11"]
