"""Tiny synthetic data generated from the feature spec, and a tiny training config."""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
import pytest

from core.config import TrainConfig
from models.features import MODEL_FEATURES, Feature
from models.frames import FeatureStats, compute_feature_stats, fill_defaults


def random_frame(n: int, seed: int = 0, features: tuple[Feature, ...] = MODEL_FEATURES) -> pd.DataFrame:
    """Raw-looking columns for every spec feature (with a few nulls), filled by ``fill_defaults``."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for f in features:
        if f.dtype == "string":
            values = np.array([f"{f.name}_{i}" for i in rng.integers(0, 50, n)], dtype=object)
        elif f.dtype == "int64":
            values = rng.integers(0, 24, n).astype(float)
        else:
            values = rng.exponential(20.0, n) if f.transform == "log_norm" else rng.random(n)
        values[rng.random(n) < 0.05] = None if f.dtype == "string" else np.nan
        columns[f.name] = values
    return fill_defaults(pd.DataFrame(columns), features)


def planted_labels(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """Clicks driven by one categorical and one numeric feature, so a model has something to learn."""
    rng = np.random.default_rng(seed)
    placement_effect = np.where(frame["placement"].str[-1].isin(list("02468")), 2.0, -2.0)
    logit = -1.0 + placement_effect + 3.0 * (frame["user_ctr_7d"].to_numpy() - 0.5)
    return (rng.random(len(frame)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


@pytest.fixture(scope="session")
def cfg() -> TrainConfig:
    return TrainConfig(
        epochs=4,
        batch_size=64,
        learning_rate=0.01,
        embedding_dim=4,
        max_hash_buckets=1024,
        hidden_units=(16, 8),
        retrieval_dim=8,
        early_stopping_patience=1,
        validations_per_epoch=1,
    )


@pytest.fixture(scope="session")
def make_data() -> Callable[[int, int], tuple[pd.DataFrame, np.ndarray]]:
    """``(n, seed) -> (frame, planted labels)``; a fixture because test modules cannot import conftest."""
    return lambda n, seed: (frame := random_frame(n, seed), planted_labels(frame, seed))


@pytest.fixture(scope="session")
def frame() -> pd.DataFrame:
    return random_frame(256)


@pytest.fixture(scope="session")
def stats(frame: pd.DataFrame) -> FeatureStats:
    return compute_feature_stats({c: frame[c].to_numpy() for c in frame.columns}, max_buckets=1024)
