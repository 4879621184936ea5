"""``benchmark-dataset`` on generated Criteo TSV and CSV files with a planted click signal."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import open_bandit
from analysis.benchmark_dataset import CRITEO_CATEGORICAL, CRITEO_NUMERIC, run
from core.config import PctrConfig, TrainConfig, load_config

pytestmark = pytest.mark.integration

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CONTRACT = {"model": {"auc", "logloss"}, "baseline": {"auc", "logloss"}, "rows": {"train", "test"}}


def _config(home: Path) -> PctrConfig:
    cfg = load_config(home=home)
    cfg.train.max_hash_buckets = 1024
    cfg.train.embedding_dim = 4
    cfg.train.hidden_units = (16, 8)
    cfg.train.epochs = 2
    cfg.train.batch_size = 128
    # a few dozen steps in all: the default 2e-3 would barely move the weights
    cfg.train.learning_rate = 0.01
    return cfg


def _planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels driven by a 20-value categorical (half of the values click much more) and a count."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, 20, n)
    count = rng.geometric(0.05, n) - 2  # heavy-tailed, with some -1 as in Criteo's I2
    logit = -1.5 + np.where(category % 2 == 0, 1.5, -1.5) + 0.8 * (np.log1p(np.maximum(count, 0)) - 2.5)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return labels, category, count


def write_criteo(path: Path, n: int, seed: int = 0) -> np.ndarray:
    """A Criteo-format TSV: signal in I2 and C3, noise elsewhere, ~10% of the fields empty."""
    labels, category, count = _planted(n, seed)
    rng = np.random.default_rng(seed + 1)
    lines = []
    for i in range(n):
        ints = [str(v) for v in rng.integers(0, 100, 13)]
        cats = [f"{v:08x}" for v in rng.integers(0, 2**32, 26)]
        ints[1], cats[2] = str(count[i]), f"{0xA0000000 + category[i]:08x}"
        fields = [v if rng.random() > 0.1 else "" for v in ints + cats]
        lines.append("\t".join([str(labels[i]), *fields]))
    path.write_text("\n".join(lines) + "\n")
    return labels


@pytest.fixture(scope="module")
def criteo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, np.ndarray]:
    tmp = tmp_path_factory.mktemp("criteo")
    labels = write_criteo(tmp / "train.txt", 3000)
    return run(_config(tmp / "home"), tmp / "train.txt", "criteo"), labels


def test_criteo_result_has_the_contract_shape_and_a_chronological_split(criteo: tuple[dict, np.ndarray]) -> None:
    result, labels = criteo
    assert {key: set(result[key]) for key in CONTRACT} == CONTRACT
    assert result["rows"] == {"train": 2400, "test": 600}
    assert result["validation_rows"] == 240
    assert result["base_rate"] == pytest.approx(labels[2400:].mean())  # the LAST 20% are the test rows
    assert result["features"] == {"categorical": list(CRITEO_CATEGORICAL), "numeric": list(CRITEO_NUMERIC)}


def test_criteo_models_learn_the_planted_signal(criteo: tuple[dict, np.ndarray]) -> None:
    result, _ = criteo
    assert result["baseline_fit"]["converged"] and result["baseline_fit"]["c"] in TrainConfig().baseline_c_values
    assert result["validation_logloss"]["model"] <= result["validation_logloss"]["baseline"] * (1 + 1e-6)
    for name in ("model", "baseline"):
        assert result[name]["auc"] > 0.65, result
        assert math.isfinite(result[name]["logloss"]) and result[name]["logloss"] < 0.69, result


def test_the_open_bandit_sample_is_fetched_from_pypi_and_benchmarked(tmp_path: Path) -> None:
    archive = open_bandit.fetch(tmp_path / "public")
    archive.write_bytes(b"torn download")
    assert open_bandit.fetch(tmp_path / "public") == archive  # a corrupted copy is fetched again
    result = run(_config(tmp_path / "home"), archive, "obd")
    # three campaigns by two policies, 10,000 impressions each; 287 clicks in all
    assert result["rows"] == {"train": 48_000, "test": 12_000}
    assert result["features"] == {"categorical": list(open_bandit.CATEGORICAL), "numeric": list(open_bandit.NUMERIC)}
    assert 0.002 < result["base_rate"] < 0.01
    assert result["baseline_fit"]["converged"]
    # 222 training clicks: any single column's click rate ranks the 65 test clicks at an AUC of 0.44-0.54,
    # so the sample tests the reader and the fit, not the models' quality (bench/quality.py reports it)
    validation = result["validation_logloss"]
    assert validation["model"] <= validation["baseline"] * (1 + 1e-6)  # float32 Keras against float64 sklearn
    assert all(0.0 <= result[name]["auc"] <= 1.0 for name in ("model", "baseline"))


def test_csv_with_named_columns_and_max_rows(tmp_path: Path) -> None:
    labels, category, count = _planted(2000, seed=3)
    frame = pd.DataFrame(
        {
            "ts": np.arange(2000),
            "ad id": category,  # ints as categories; a space that no Keras layer name may hold
            "views": np.where(np.arange(2000) % 7 == 0, np.nan, count),
            "noise": np.random.default_rng(4).random(2000),
            "clicked": labels,
        }
    )
    frame.to_csv(tmp_path / "clicks.csv", index=False)
    result = run(
        _config(tmp_path / "home"),
        tmp_path / "clicks.csv",
        "csv",
        label="clicked",
        categorical=["ad id"],
        numeric=["views", "noise"],
        max_rows=1500,
    )
    assert result["rows"] == {"train": 1200, "test": 300}
    assert result["features"] == {"categorical": ["ad_id"], "numeric": ["views", "noise"]}
    assert result["model"]["auc"] > 0.65 and result["baseline"]["auc"] > 0.65, result
    assert math.isfinite(result["model"]["logloss"])


@pytest.mark.parametrize(
    ("fmt", "kwargs", "error", "match"),
    [
        ("parquet", {}, ValueError, "unknown format"),
        ("csv", {"label": "clicked"}, ValueError, "needs feature columns"),
        ("csv", {"categorical": ["ad"]}, ValueError, "needs --label"),
        ("csv", {"label": "clicked", "numeric": ["nope"]}, ValueError, r"not in the header.*nope"),
        ("csv", {"label": "ad", "numeric": ["views"]}, ValueError, "must be numbers"),
        ("csv", {"label": "views", "categorical": ["ad"]}, ValueError, "only 0 and 1"),
        ("criteo", {"label": "clicked"}, ValueError, "for --format csv"),
        ("csv", {"label": "clicked", "categorical": ["ad"]}, ValueError, "too few"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, fmt: str, kwargs: dict, error: type, match: str) -> None:
    path = tmp_path / "clicks.csv"
    pd.DataFrame({"ad": ["a", "b", "c"], "views": [3, 4, 5], "clicked": [0, 1, 0]}).to_csv(path, index=False)
    with pytest.raises(error, match=match):
        run(_config(tmp_path), path, fmt, **kwargs)


def test_missing_file_and_bad_criteo_labels(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        run(_config(tmp_path), tmp_path / "absent.txt", "criteo")
    path = tmp_path / "bad.txt"
    write_criteo(path, 20)
    path.write_text("2" + path.read_text()[1:])  # the first row's label
    with pytest.raises(ValueError, match="only 0 and 1"):
        run(_config(tmp_path), path, "criteo")
