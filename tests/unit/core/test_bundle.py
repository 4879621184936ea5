from __future__ import annotations

import pytest

from core.bundle import tf_serving_version


def test_the_tf_serving_version_is_the_one_the_manifest_records() -> None:
    assert tf_serving_version({"version": "v1", "model_version": "3", "tf_serving_version": 4}) == 4
    assert tf_serving_version({"version": "v1", "model_version": "3", "tf_serving_version": "4"}) == 4


def test_a_bundle_published_before_the_field_expects_its_registered_model_version() -> None:
    assert tf_serving_version({"version": "v1", "model_version": "12"}) == 12


@pytest.mark.parametrize("value", ["sim-legacy", "-1", -1, 1.5, True, None, "٣"])
def test_a_version_tf_serving_cannot_serve_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="bundle v1 records no usable TF Serving version"):
        tf_serving_version({"version": "v1", "model_version": "3", "tf_serving_version": value})
