from __future__ import annotations

from feast import FeatureService, FeatureView

from feature_repo.definitions import feast_objects, view_name
from models.features import ENTITY_KEYS, FEATURE_SERVICES, batch_features


def test_views_and_services_are_generated_from_the_spec() -> None:
    objects = feast_objects({e: f"/data/{e}/*.parquet" for e in ENTITY_KEYS}, ttl_days=30)
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    for entity in ENTITY_KEYS:
        view = views[view_name(entity)]
        assert sorted(f.name for f in view.features) == sorted(f.name for f in batch_features(entity))
        assert view.entities == [entity]
        assert view.batch_source.path == f"/data/{entity}/*.parquet"
    services = {o.name: o for o in objects if isinstance(o, FeatureService)}
    assert set(services) == set(FEATURE_SERVICES)
    ranker_views = {p.name for p in services["ranker_v1"].feature_view_projections}
    assert ranker_views == {view_name(e) for e in FEATURE_SERVICES["ranker_v1"]}
