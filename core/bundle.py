"""Serving bundles: a versioned directory per published model set, and the CURRENT pointer to one.

Layout of ``$PCTR_HOME/serving/bundles/<version>/``: ``ranker/`` (SavedModel, raw features in),
``calibrator.json``, ``user_tower/`` and ``ad_tower/`` (SavedModels), ``faiss.index``, ``ads.parquet`` (row i = FAISS
id i: ad ids, bids and ad-side features as of the data date), ``manifest.json`` (versions, feature
service, data dates, checksums of every file).
"""

from __future__ import annotations

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
