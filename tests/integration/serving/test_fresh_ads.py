"""Fresh ads in the running service: the pipeline's listing, catalog and online values change after the publish,
and the service's refreshes serve them, a new ad embedded by the bundle's ad tower."""

import datetime as dt
import re
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from core.layout import Layout
from models.features import batch_features, tower_features
from serving.app import create_app

pytestmark = pytest.mark.integration

REQUEST = {"user_id": "u1", "context": {"placement": "feed"}, "slots": 2}


def write_current_ads(cfg, ds, ads_table, new_ids=(), **ad_values):
    """What the pipeline writes after the publish: the ad features partition of ``ds`` (the listing), the catalog of
    ``ds``, and online values of the ads and advertisers, for the bundle's ads and ``new_ids`` (a copy of a0 each
    but for their ids and advertiser); ``ad_values`` replace columns of the ads' online values."""
    from feature_repo.definitions import view_name
    from feature_repo.store import feature_store

    layout = Layout(cfg.home)
    new = pd.concat([ads_table.head(1)] * len(new_ids), ignore_index=True)
    new = new.assign(ad_id=list(new_ids), advertiser_id="adv-new", campaign_id="c-new")
    table = pd.concat([ads_table, new], ignore_index=True).assign(**ad_values)
    layout.feature_files("ad", ds).mkdir(parents=True, exist_ok=True)
    table[["ad_id"]].to_parquet(layout.feature_files("ad", ds) / "part-0.parquet", index=False)
    catalog = table[["ad_id", "advertiser_id", "campaign_id"]].assign(valid_from=pd.Timestamp(ds, tz="UTC"))
    layout.catalog("ads").joinpath(f"dt={ds}").mkdir(parents=True, exist_ok=True)
    catalog.to_parquet(layout.catalog("ads") / f"dt={ds}" / "part-0.parquet", index=False)
    ts = pd.Timestamp(dt.datetime.now(dt.UTC)).floor("s")
    store = feature_store(cfg)
    for entity in ("ad", "advertiser"):
        keys = f"{entity}_id"
        rows = table[[keys, *(f.name for f in batch_features(entity))]].drop_duplicates(keys)
        store.write_to_online_store(view_name(entity), rows.assign(event_timestamp=ts, created_timestamp=ts))
    return table


def gauge(client, name):
    return float(re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.MULTILINE).group(1))


def refreshes(client, result):
    found = re.search(rf'^pctr_ads_refreshes_total{{result="{result}"}} (\S+)$', client.get("/metrics").text, re.M)
    return 0.0 if found is None else float(found.group(1))


def test_an_ad_launched_after_the_publish_is_retrieved_once_the_service_refreshes(
    make_home, publish, ready, ads_table, feature_day
):
    cfg = make_home(ads_refresh_seconds=0.2, retrieval_k=60)  # k over every ad: a candidate iff in the index
    bundle = publish(cfg, "v1", "1")
    with TestClient(create_app(cfg)) as client:
        ready(client.get)
        assert client.post("/v1/rank", json=REQUEST).json()["candidates"] == len(ads_table)
        assert refreshes(client, "error") >= 1  # nothing lists the current ads yet: the publish's serve

        write_current_ads(cfg, feature_day, ads_table, new_ids=["launched-late"], ad_bid=1.2345)
        deadline = time.time() + 30
        while client.post("/v1/rank", json=REQUEST).json()["candidates"] != len(ads_table) + 1:
            assert time.time() < deadline, client.get("/metrics").text
            time.sleep(0.1)
        engine = client.app.state.engines.engine
        row = engine.ads["ad_id"].tolist().index("launched-late")
        assert row == len(ads_table)  # appended: row i = FAISS id i
        assert row in engine.retrieval.candidates("u1", engine.features.user("u1")[0])
        assert set(engine.ads["ad_bid"]) == {1.2345}  # every ad's bid is the online store's now
        assert engine.ads["advertiser_id"][row] == "adv-new" and engine.ads["campaign_id"][row] == "c-new"

        from models.export import load_serving_fn

        ad_tower = load_serving_fn(bundle / "ad_tower")
        expected = ad_tower({f.name: engine.ads[f.name][[row]] for f in tower_features("ad")})[0]
        np.testing.assert_allclose(engine.retrieval.index.reconstruct(row), expected, rtol=1e-5, atol=1e-6)
        assert refreshes(client, "ok") >= 1
        assert 0.0 <= gauge(client, "pctr_ads_table_age_seconds") < 5.0
        assert 0.0 <= gauge(client, "pctr_index_age_seconds") < 5.0


def test_a_failed_refresh_keeps_the_served_ads_and_their_ages_grow(make_home, publish, ads_table, feature_day):
    cfg = make_home(ads_refresh_seconds=3600.0)  # the load's refresh and the test's only
    client = TestClient(create_app(cfg))  # not entered: nothing loads until /admin/reload
    assert np.isnan(gauge(client, "pctr_ads_table_age_seconds")) and np.isnan(gauge(client, "pctr_index_age_seconds"))

    write_current_ads(cfg, feature_day, ads_table, new_ids=["late-1"])
    publish(cfg, "v1", "1")
    assert client.post("/admin/reload").status_code == 200
    engines = client.app.state.engines
    engine = engines.engine
    assert "late-1" in engine.ads["ad_id"]  # refreshed before it went live
    young = gauge(client, "pctr_ads_table_age_seconds")
    time.sleep(0.3)
    older = gauge(client, "pctr_ads_table_age_seconds")
    assert older >= young + 0.3

    shutil.rmtree(Layout(cfg.home).features("ad"))  # the listing is gone
    side = engine.side
    with pytest.raises(FileNotFoundError, match="no ad features"):
        engines.refresh_ads()
    assert engine.side is side and "late-1" in engine.ads["ad_id"]
    assert client.post("/v1/rank", json=REQUEST).status_code == 200
    assert refreshes(client, "error") == 1.0
    assert gauge(client, "pctr_ads_table_age_seconds") > older  # still the table of the last refresh

    write_current_ads(cfg, feature_day, ads_table, new_ids=["late-1", "late-2"])
    index_age = gauge(client, "pctr_index_age_seconds")
    merged = engines.refresh_ads()
    assert merged.added == ("late-2",)
    assert engine.ads["ad_id"].tolist()[-2:] == ["late-1", "late-2"]
    assert gauge(client, "pctr_ads_table_age_seconds") < older
    assert gauge(client, "pctr_index_age_seconds") < index_age
    assert refreshes(client, "ok") == 2.0
