"""Feast declarations of pctr, generated from the feature spec (``models.features``).

Entities, sources, feature views and the versioned feature services ``ranker_v1`` and
``retrieval_v1``: training (``get_historical_features``) and serving (``get_online_features``) both go
through a feature service, so a model is always fed exactly the set it was trained on.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.data_format import ParquetFormat
from feast.types import Float32, Int64, String
from feast.value_type import ValueType

from models.features import ENTITY_KEYS, FEATURE_SERVICES, batch_features

FEAST_TYPES = {"string": String, "int64": Int64, "float32": Float32}


def view_name(entity: str) -> str:
    return f"{entity}_features"


def feast_objects(feature_globs: dict[str, str], ttl_days: int) -> list[object]:
    """All Feast objects; ``feature_globs`` maps each entity to the Parquet glob of its feature files."""
    entities = {
        name: Entity(name=name, join_keys=[key], value_type=ValueType.STRING) for name, key in ENTITY_KEYS.items()
    }
    views = {}
    for name, entity in entities.items():
        source = FileSource(
            name=f"{name}_features_source",
            path=feature_globs[name],
            file_format=ParquetFormat(),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        )
        views[name] = FeatureView(
            name=view_name(name),
            entities=[entity],
            ttl=timedelta(days=ttl_days),
            schema=[Field(name=f.name, dtype=FEAST_TYPES[f.dtype]) for f in batch_features(name)],  # type: ignore[arg-type]
            source=source,
            online=True,
        )
    services = [
        FeatureService(name=service, features=[views[e] for e in view_entities])
        for service, view_entities in FEATURE_SERVICES.items()
    ]
    return [*entities.values(), *views.values(), *services]
