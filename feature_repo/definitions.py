"""Feast declarations of pctr, generated from the feature spec (``models.features``).

Entities, sources, feature views and the versioned feature services ``ranker_v1`` and
``retrieval_v1``: training (``get_historical_features``) and serving (``get_online_features``) both go
through a feature service, so a model is always fed exactly the set it was trained on.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.types import Float32, Float64, Int64, String
from feast.value_type import ValueType

from models.features import ENTITIES, FEAST_ENTITIES, FEATURE_SERVICES, batch_features
from models.features import Entity as SpecEntity

FEAST_TYPES = {"string": String, "int64": Int64, "float32": Float32, "float64": Float64}


def view_name(entity: str) -> str:
    return f"{entity}_features"


def view_refs(entity: SpecEntity) -> list[str]:
    """Feast's references (``view:feature``) to every feature of an entity's view, in spec order."""
    return [f"{view_name(entity)}:{f.name}" for f in batch_features(entity)]


def service_refs(service: str, entity: SpecEntity | None = None) -> list[str]:
    """The feature references of a feature service (``ranker_v1``...): its views' in service order, as it is built.

    With ``entity``: only the service's references to that entity's view (none if the service lacks it).
    """
    return [ref for e in FEATURE_SERVICES[service] if entity in (None, e) for ref in view_refs(e)]


def _source(name: str, path: str, offline_store: str) -> DataSource:
    """The same Parquet files as a FileSource, or as a SparkSource for Feast's Spark offline store (which rejects
    FileSources)."""
    timestamps = {"timestamp_field": "event_timestamp", "created_timestamp_column": "created_timestamp"}
    if offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=f"{name}_features_source", path=path, file_format="parquet", **timestamps)
    return FileSource(name=f"{name}_features_source", path=path, file_format=ParquetFormat(), **timestamps)


def feast_objects(feature_globs: dict[str, str], ttl_days: int, offline_store: str = "duckdb") -> list[object]:
    """All Feast objects; ``feature_globs`` maps each entity to the Parquet glob of its feature files."""
    by_key = {
        key: Entity(name=name, join_keys=[key], value_type=ValueType.STRING) for name, key in FEAST_ENTITIES.items()
    }
    views = {}
    for name, spec in ENTITIES.items():
        source = _source(name, feature_globs[name], offline_store)
        views[name] = FeatureView(
            name=view_name(name),
            entities=[by_key[key] for key in spec.keys],
            ttl=timedelta(days=ttl_days),
            schema=[Field(name=f.name, dtype=FEAST_TYPES[f.dtype]) for f in batch_features(name)],
            source=source,
            online=True,
        )
    services = [
        FeatureService(name=service, features=[views[e] for e in view_entities])
        for service, view_entities in FEATURE_SERVICES.items()
    ]
    return [*by_key.values(), *views.values(), *services]
