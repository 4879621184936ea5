"""Retrieval stage: two-tower model on the train split, ad tower over every active ad -> FAISS index.

The index rows are aligned with ``ads.parquet`` (row i = FAISS id i), which also carries every
ad-side ranker feature as of ds: the service keeps it in memory instead of asking the online store
for a thousand ads per request.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from core.catalog import latest_catalog
from core.config import PctrConfig
from core.io import Stats, write_stats
from core.layout import Layout, retrieval_dir
from jobs.split_stream import row_groups, stream_dataset
from jobs.training_set import load_feature_stats, load_split
from models.features import AD_TABLE_COLUMNS, ENTITIES


def active_ads(layout: Layout, ds: str) -> Any:
    """Every ad launched by the end of ds with its catalog fields and ad/advertiser batch features of ds."""
    import pandas as pd

    catalog = latest_catalog(layout, "ads", ds)
    ads = pd.read_parquet(layout.feature_files("ad", ds))
    advertisers = pd.read_parquet(layout.feature_files("advertiser", ds))
    table = ads.merge(catalog[["ad_id", "advertiser_id", "campaign_id"]], on="ad_id", how="inner").merge(
        advertisers, on=list(ENTITIES["advertiser"].keys), how="left"
    )
    return table[list(AD_TABLE_COLUMNS)].sort_values("ad_id").reset_index(drop=True)


def build_index(embeddings: np.ndarray, kind: str) -> Any:
    """Inner-product index over L2-normalised embeddings (exact by default; HNSW for large catalogs)."""
    import faiss

    dim = embeddings.shape[1]
    index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT) if kind == "hnsw" else faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def recall_at_k(user_emb: np.ndarray, clicked_rows: np.ndarray, index: Any, k: int) -> float | None:
    """Share of held-out clicks whose ad is among the user's top-k retrieved ads (None without clicks)."""
    if len(clicked_rows) == 0:
        return None
    _, ids = index.search(np.ascontiguousarray(user_emb, dtype=np.float32), k)
    return float(np.mean([row in found for row, found in zip(clicked_rows, ids, strict=True)]))


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Train the towers, embed all active ads, build the FAISS index, measure recall@K on holdout clicks."""
    import faiss

    from models.export import export_saved_model
    from models.features import tower_features
    from models.frames import fill_defaults
    from models.inputs import to_tensors
    from models.retrieval import build_two_tower, get_tower
    from models.training import train

    started = time.time()
    layout = Layout(cfg.home)
    out = retrieval_dir(cfg, ds)
    out.mkdir(parents=True, exist_ok=True)
    model = build_two_tower(load_feature_stats(cfg, ds), cfg.train)
    inputs = [*tower_features("user"), *tower_features("ad")]
    batch = cfg.train.batch_size
    history = train(
        model,
        stream_dataset(row_groups(cfg, ds, "train"), inputs, batch, shuffle_seed=cfg.train.seed),
        stream_dataset(row_groups(cfg, ds, "validation"), inputs, 4 * batch),
        cfg.train,
        epochs=cfg.train.retrieval_epochs,
    )
    user_tower, ad_tower = get_tower(model, "user"), get_tower(model, "ad")
    ads = active_ads(layout, ds)
    ad_features = tower_features("ad")
    predict_batch = 4 * batch  # no gradients: bigger batches than training
    ad_emb = ad_tower.predict(
        to_tensors(fill_defaults(ads, ad_features), ad_features), batch_size=predict_batch, verbose=0
    )
    index = build_index(ad_emb, cfg.train.retrieval_index)
    faiss.write_index(index, str(out / "faiss.index"))
    ads.to_parquet(out / "ads.parquet", index=False)
    export_saved_model(user_tower, out / "user_tower")
    # the service embeds ads launched after the publish with it (serving.fresh_ads)
    export_saved_model(ad_tower, out / "ad_tower")

    holdout = load_split(cfg, ds, "holdout")
    clicks = holdout[holdout["label"] == 1]
    row_of = {ad_id: i for i, ad_id in enumerate(ads["ad_id"])}
    clicks = clicks[clicks["ad_id"].isin(row_of)]
    user_emb = user_tower.predict(to_tensors(clicks, tower_features("user")), batch_size=predict_batch, verbose=0)
    k = cfg.serving.retrieval_k
    result: Stats = {
        "stage": "train_retrieval",
        "ds": ds,
        "history": history,
        "index_size": int(index.ntotal),
        "index_type": cfg.train.retrieval_index,
        "embedding_dim": int(ad_emb.shape[1]),
        f"recall_at_{k}": recall_at_k(user_emb, clicks["ad_id"].map(row_of).to_numpy(), index, k),
        "random_recall": min(1.0, k / max(index.ntotal, 1)),
        "holdout_clicks": len(clicks),
        "output_path": str(out),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(out, result)
