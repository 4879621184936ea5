"""Serving bundles: a versioned directory per published model set, and the CURRENT pointer to one.

Layout of ``$PCTR_HOME/serving/bundles/<version>/``: ``ranker/`` (SavedModel, raw features in),
``calibrator.json``, ``user_tower/`` and ``ad_tower/`` (SavedModels), ``faiss.index``, ``ads.parquet`` (row i = FAISS
id i: ad ids, bids and ad-side features as of the data date), ``manifest.json`` (versions, feature
service, data dates, checksums of every file).

With a remote TF Serving (``serving.tf_serving_url``), ``ranker/`` is deployed there as
``<model_base_path>/<N>/``, N the manifest's ``tf_serving_version``: the service scores with that
version only, so the calibrator it applies is the one fitted to that ranker.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.io import read_json, sha256_file
from core.layout import Layout

MANIFEST = "manifest.json"


def file_checksums(bundle: Path) -> dict[str, str]:
    """sha256 of every file in the bundle except the manifest, keyed by relative path."""
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {str(path.relative_to(bundle)): sha256_file(path) for path in files}


def read_manifest(bundle: Path) -> dict[str, Any]:
    return read_json(bundle / MANIFEST)


def verify(bundle: Path) -> dict[str, Any]:
    """Return the manifest after checking every file against its checksum (a torn copy fails loudly)."""
    manifest = read_manifest(bundle)
    actual = file_checksums(bundle)
    if actual != manifest["checksums"]:
        bad = sorted({name for name, _ in set(actual.items()) ^ set(manifest["checksums"].items())})
        raise ValueError(f"bundle {bundle} does not match its manifest: {bad[:5]}")
    return manifest


def tf_serving_version(manifest: Mapping[str, Any]) -> int:
    """The TF Serving model version the bundle's ``ranker/`` is served as; raises ``ValueError`` if not a
    non-negative integer (TF Serving's version directories are numbers)."""
    # Bundles published before the field existed expect their registered model version, the rule
    # jobs.publish records: a rollback to one still goes through.
    value = manifest.get("tf_serving_version", manifest.get("model_version"))
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"bundle {manifest.get('version')} records no usable TF Serving version: {value!r}")
    return value


def current_version(layout: Layout) -> str | None:
    """The bundle version CURRENT names, or None before the first publish."""
    pointer = layout.current_pointer
    return pointer.read_text().strip() if pointer.exists() else None


def current_bundle_dir(layout: Layout) -> Path | None:
    """The live bundle named by CURRENT, or None before the first publish."""
    version = current_version(layout)
    if version is None:
        return None
    bundle = layout.bundles / version
    if not (bundle / MANIFEST).exists():
        raise FileNotFoundError(f"CURRENT names bundle {version!r}, but {bundle} has no {MANIFEST}")
    return bundle
