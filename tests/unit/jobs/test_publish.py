"""Publish on stand-in stage outputs: the bundle it writes and what its manifest records."""

from __future__ import annotations

from pathlib import Path

from core.bundle import read_manifest, tf_serving_version, verify
from core.config import PctrConfig, load_config
from core.io import write_json_atomic
from core.layout import Layout, calibrator_path, evaluation_dir, ranker_dir, retrieval_dir
from jobs import publish

DS, HOUR = "2026-11-20", "2026-11-21T03"


def _stage_outputs(cfg: PctrConfig, key: str, version: str, sources: dict[str, dict[str, str]]) -> None:
    """What register, evaluate, training_set and the training of ``key`` leave for publish."""
    layout = Layout(cfg.home)
    registered = {"model_name": "pctr", "model_version": version, "run_id": "r1", "promoted": True}
    write_json_atomic(layout.stage_output("register", key) / "_stats.json", registered)
    write_json_atomic(evaluation_dir(cfg, key) / "_stats.json", {"metrics": {"auc": 0.7}})
    write_json_atomic(layout.training_set(key) / "_stats.json", {"sources": sources})
    (ranker_dir(cfg, key) / "saved_model").mkdir(parents=True)
    (ranker_dir(cfg, key) / "saved_model" / "saved_model.pb").write_bytes(f"ranker {key}".encode())
    calibrator_path(cfg, key).write_text("{}")


def _retrieval_outputs(cfg: PctrConfig, ds: str) -> None:
    for tower in ("user_tower", "ad_tower"):
        (retrieval_dir(cfg, ds) / tower).mkdir(parents=True)
        (retrieval_dir(cfg, ds) / tower / "saved_model.pb").write_bytes(tower.encode())
    for name in ("faiss.index", "ads.parquet"):
        (retrieval_dir(cfg, ds) / name).write_bytes(name.encode())


def test_the_manifest_records_the_tf_serving_version_the_bundle_expects(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    layout = Layout(cfg.home)
    _stage_outputs(cfg, DS, "12", {"train": {"2026-11-18": "2026-11-18"}, "holdout": {DS: DS}})
    _retrieval_outputs(cfg, DS)

    stats = publish.run(cfg, DS)

    bundle = layout.bundles / f"{DS}-v12"
    assert stats["version"] == stats["current"] == bundle.name
    manifest = read_manifest(bundle)
    assert manifest["model_version"] == "12"
    assert manifest["tf_serving_version"] == 12  # a number, as TF Serving's version directories are
    assert tf_serving_version(verify(bundle)) == 12
    assert manifest["data_dates"] == {"train": ["2026-11-18"], "holdout": [DS]}


def test_an_hourly_bundle_holds_its_ranker_and_the_retrieval_of_the_daily_run_it_descends_from(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    _retrieval_outputs(cfg, DS)
    sources = {"train": {"2026-11-21T01": "2026-11-21T01"}, "holdout": {HOUR: HOUR}}
    _stage_outputs(cfg, HOUR, "13", sources)
    write_json_atomic(
        ranker_dir(cfg, HOUR) / "_stats.json", {"daily_ds": DS, "daily_version": "12", "warm_start_version": "12"}
    )

    bundle = Layout(cfg.home).bundles / publish.run(cfg, HOUR)["version"]

    assert bundle.name == f"{HOUR}-v13"
    assert (bundle / "ranker" / "saved_model.pb").read_bytes() == f"ranker {HOUR}".encode()
    assert (bundle / "faiss.index").read_bytes() == b"faiss.index"
    assert verify(bundle)["data_dates"] == {"train": ["2026-11-21T01"], "holdout": [HOUR]}
