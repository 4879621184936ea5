"""Publish on stand-in stage outputs: the bundle it writes and what its manifest records."""

from __future__ import annotations

from pathlib import Path

from core.bundle import read_manifest, tf_serving_version, verify
from core.config import load_config
from core.io import write_json_atomic
from core.layout import Layout, calibrator_path, evaluation_dir, ranker_dir, retrieval_dir
from jobs import publish

DS = "2026-11-20"


def test_the_manifest_records_the_tf_serving_version_the_bundle_expects(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    layout = Layout(cfg.home)
    registered = {"model_name": "pctr", "model_version": "12", "run_id": "r1", "promoted": True}
    write_json_atomic(layout.stage_output("register", DS) / "_stats.json", registered)
    write_json_atomic(evaluation_dir(cfg, DS) / "_stats.json", {"metrics": {"auc": 0.7}})
    (ranker_dir(cfg, DS) / "saved_model").mkdir(parents=True)
    (ranker_dir(cfg, DS) / "saved_model" / "saved_model.pb").write_bytes(b"ranker")
    calibrator_path(cfg, DS).write_text("{}")
    for tower in ("user_tower", "ad_tower"):
        (retrieval_dir(cfg, DS) / tower).mkdir(parents=True)
        (retrieval_dir(cfg, DS) / tower / "saved_model.pb").write_bytes(tower.encode())
    for name in ("faiss.index", "ads.parquet"):
        (retrieval_dir(cfg, DS) / name).write_bytes(name.encode())

    stats = publish.run(cfg, DS)

    bundle = layout.bundles / f"{DS}-v12"
    assert stats["version"] == stats["current"] == bundle.name
    manifest = read_manifest(bundle)
    assert manifest["model_version"] == "12"
    assert manifest["tf_serving_version"] == 12  # a number, as TF Serving's version directories are
    assert tf_serving_version(verify(bundle)) == 12
