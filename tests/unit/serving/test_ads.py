import numpy as np
import pandas as pd
import pytest

from models.features import AD_TABLE_COLUMNS, BY_NAME


@pytest.fixture
def table(tiny) -> pd.DataFrame:
    return pd.DataFrame({name: tiny.make_ads()[name] for name in AD_TABLE_COLUMNS})


def test_the_ads_table_loads_as_columns_with_spec_defaults(tmp_path, table):
    from serving.ads import load_ads

    table.loc[2, "ad_age_days"] = None
    table.loc[3, "ad_creative_type"] = None
    table.loc[4, "campaign_id"] = None
    table.to_parquet(tmp_path / "ads.parquet", index=False)
    ads = load_ads(tmp_path / "ads.parquet", index_size=len(table))
    assert set(ads) == set(AD_TABLE_COLUMNS)
    assert ads["ad_id"].tolist() == table["ad_id"].tolist()
    assert ads["ad_age_days"][2] == BY_NAME["ad_age_days"].default
    assert ads["ad_creative_type"][3] == BY_NAME["ad_creative_type"].default
    assert ads["campaign_id"][4] == ""
    np.testing.assert_array_equal(ads["ad_bid"], table["ad_bid"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.drop(columns=["campaign_id"]), r"lacks columns \['campaign_id'\]"),
        (lambda t: t.head(5), "has 5 rows but the FAISS index 12"),
        (lambda t: t.assign(ad_bid=-t["ad_bid"]), "bids must be finite and >= 0"),
        (lambda t: t.assign(ad_bid=np.nan), "bids must be finite and >= 0"),
    ],
)
def test_an_ads_table_that_does_not_fit_the_index_is_refused(tmp_path, table, change, message):
    from serving.ads import load_ads

    change(table).to_parquet(tmp_path / "ads.parquet", index=False)
    with pytest.raises(ValueError, match=message):
        load_ads(tmp_path / "ads.parquet", index_size=len(table))
