from __future__ import annotations

from feast import Entity, FeatureService, FeatureView

from feature_repo.definitions import feast_objects, service_refs, view_name, view_refs
from models.features import (
    ENTITIES,
    FEAST_ENTITIES,
    FEATURE_ENTITIES,
    FEATURE_SERVICES,
    RANKER_SERVICE,
    RETRIEVAL_SERVICE,
    batch_features,
)


def _objects() -> list[object]:
    return feast_objects({e: f"/data/{e}/*.parquet" for e in ENTITIES}, ttl_days=30)


def test_views_and_services_are_generated_from_the_spec() -> None:
    objects = _objects()
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    assert set(views) == {view_name(e) for e in ENTITIES}
    for entity, spec in ENTITIES.items():
        view = views[view_name(entity)]
        assert sorted(f.name for f in view.features) == sorted(f.name for f in batch_features(entity))
        assert [FEAST_ENTITIES[name] for name in view.entities] == list(spec.keys)
        assert view.batch_source.path == f"/data/{entity}/*.parquet"
    entities = {o.name: o.join_key for o in objects if isinstance(o, Entity)}
    assert entities == FEAST_ENTITIES
    services = {o.name: o for o in objects if isinstance(o, FeatureService)}
    assert set(services) == set(FEATURE_SERVICES)
    ranker_views = {p.name for p in services["ranker_v1"].feature_view_projections}
    assert ranker_views == {view_name(e) for e in FEATURE_SERVICES["ranker_v1"]}


def test_service_refs_are_the_features_of_the_service_as_feast_builds_it() -> None:
    services = {o.name: o for o in _objects() if isinstance(o, FeatureService)}
    for name, service in services.items():
        built = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
        assert service_refs(name) == built
    assert view_refs("user") == [f"user_features:{f.name}" for f in batch_features("user")]
    assert service_refs(RANKER_SERVICE, "user_category") == view_refs("user_category")
    assert service_refs(RETRIEVAL_SERVICE, "user_category") == []
    # the ranker's service is every batch feature of the spec
    assert sorted(service_refs(RANKER_SERVICE)) == sorted(f"{f.entity}_features:{f.name}" for f in batch_features())


def test_user_category_view_is_keyed_by_user_and_category_and_only_ranked_with() -> None:
    objects = _objects()
    view = next(o for o in objects if isinstance(o, FeatureView) and o.name == "user_category_features")
    assert view.entities == ["user", "category"]
    # the key must not be ``ad_category``: that is a feature of the ad view, returned alongside it
    assert [FEAST_ENTITIES[name] for name in view.entities] == ["user_id", "category"]
    assert [f.name for f in view.features] == [
        f"user_category_{stat}_{w}d" for w in (7, 30) for stat in ("impressions", "clicks", "ctr")
    ]
    assert all(f.default == 0.0 and f.tower is None for f in batch_features("user_category"))
    services = {o.name: {p.name for p in o.feature_view_projections} for o in objects if isinstance(o, FeatureService)}
    assert "user_category_features" in services["ranker_v1"]
    assert "user_category_features" not in services["retrieval_v1"]


def test_ctr_priors_come_earlier_and_cover_every_window() -> None:
    """build_features computes entities in this order and smooths with the prior entity's CTR of the same window."""
    assert FEATURE_ENTITIES == tuple(ENTITIES)
    for i, (entity, spec) in enumerate(ENTITIES.items()):
        if spec.ctr_prior is not None:
            assert spec.ctr_prior in FEATURE_ENTITIES[:i], entity
            assert set(spec.windows) <= set(ENTITIES[spec.ctr_prior].windows), entity
            assert set(ENTITIES[spec.ctr_prior].keys) <= set(spec.keys), entity
