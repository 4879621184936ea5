"""The Feast store of a pctr home: repo config from ``cfg.features``, declarations from ``feature_repo.definitions``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.config import PctrConfig
from core.io import write_text_atomic
from core.layout import Layout
from core.spark import spark_conf
from models.features import FEATURE_ENTITIES

if TYPE_CHECKING:
    from feast import FeatureStore


def repo_config(cfg: PctrConfig) -> dict[str, Any]:
    """feature_store.yaml as a dict: offline and online store chosen by config."""
    layout = Layout(cfg.home)
    offline: dict[str, Any] = {"type": cfg.features.offline_store}
    if cfg.features.offline_store == "spark":
        # the session Feast starts when no stage's is active: pctr's, so a standalone master's executors reach it
        offline["spark_conf"] = spark_conf(cfg)
    if cfg.features.online_store == "redis":
        online: dict[str, Any] = {"type": "redis", "connection_string": cfg.features.redis_connection}
    else:
        online = {"type": "sqlite", "path": str(layout.feast_repo / "online_store.db")}
    return {
        "project": cfg.features.project,
        "registry": {"registry_type": "file", "path": str(layout.feast_repo / "registry.db")},
        "provider": "local",
        "offline_store": offline,
        "online_store": online,
        "entity_key_serialization_version": 3,
    }


def feature_store(cfg: PctrConfig, apply: bool = False) -> FeatureStore:
    """Open the store (writing its feature_store.yaml, so the `feast` CLI works on it too).

    ``apply=True`` registers the declarations from ``feature_repo`` (idempotent).
    """
    import yaml
    from feast import FeatureStore

    from feature_repo.definitions import feast_objects

    layout = Layout(cfg.home)
    if apply:
        _refuse_old_feature_days(layout)
    layout.feast_repo.mkdir(parents=True, exist_ok=True)
    write_text_atomic(layout.feast_repo / "feature_store.yaml", yaml.safe_dump(repo_config(cfg), sort_keys=False))
    store = FeatureStore(repo_path=str(layout.feast_repo))
    if apply:
        globs = {entity: layout.feature_glob(entity) for entity in FEATURE_ENTITIES}
        store.apply(feast_objects(globs, cfg.features.ttl_days, cfg.features.offline_store))
    return store


# Before feature days were committed as Spark's part files (``Layout.feature_files``), each was one file
OLD_FEATURE_FILE = "features.parquet"


def _refuse_old_feature_days(layout: Layout) -> None:
    """Feature days an older pctr wrote are not matched by the sources' glob: training would miss them silently."""
    old = sorted(
        {
            path.parent.name.removeprefix("dt=")
            for e in FEATURE_ENTITIES
            for path in layout.features(e).glob(f"dt=*/{OLD_FEATURE_FILE}")
        }
    )
    if old:
        raise RuntimeError(
            f"feature days {old} are in an older layout ({OLD_FEATURE_FILE}) that the feature store no longer reads: "
            "run `pctr build-features --ds DS` for each of them again"
        )
