"""Benchmark the ranker (DeepFM) against the tuned logistic-regression baseline on any tabular click file.

Reads a Criteo Display Advertising Challenge TSV (no header: label, integer features I1..I13,
categorical hashes C1..C26, any of them empty), the Open Bandit Dataset sample
(``analysis.open_bandit``) or a CSV with a header and named label / feature columns, builds
``Feature``s for those columns so that the pipeline's own model code runs on them, and reports test
AUC and log loss of both models on a chronological split: the first 80% of the rows (file order =
time order) train, the last 20% test. The last 10% of the train part is the validation slice (early
stopping, the baseline's L2 strength).
"""

from __future__ import annotations

import csv
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import PctrConfig

if TYPE_CHECKING:
    import pandas as pd

    from models.features import Feature

FORMATS = ("criteo", "obd", "csv")
CRITEO_LABEL = "label"
CRITEO_NUMERIC = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
TRAIN_FRACTION = 0.8
VALIDATION_FRACTION = 0.1  # of the train part


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run(
    cfg: PctrConfig,
    path: Path,
    fmt: str,
    label: str | None = None,
    categorical: list[str] | None = None,
    numeric: list[str] | None = None,
    max_rows: int | None = None,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Fit the baseline and train DeepFM from it on the first 80% of ``path``; metrics on the last 20%.

    Returns ``{"model": {"auc", "logloss"}, "baseline": {"auc", "logloss"}, "rows": {"train",
    "test"}}`` plus ``validation_rows`` (the validation slice, counted in ``rows.train``),
    ``validation_logloss`` of both models, ``baseline_fit`` (``models.baseline.LogisticFit``),
    ``search`` (DeepFM's learning rate and embedding weight decay, chosen from
    ``cfg.train.search_*`` on the validation slice, and every trial), ``base_rate`` (test CTR),
    ``features``, ``examples_per_second`` (DeepFM training, the chosen setting's) and ``seconds``.
    ``label`` / ``categorical`` / ``numeric`` are for ``csv`` only (Criteo's and the OBD's columns are
    fixed). The other hyperparameters come from ``cfg.train``. Progress goes to ``log`` (stderr), so that stdout
    stays free for the result. An AUC is None when the test part holds a single class.
    """
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    if fmt == "criteo":
        if label or categorical or numeric:
            raise ValueError("--label/--categorical/--numeric are for --format csv; Criteo's columns are fixed")
        frame = _read_criteo(path, max_rows)
        label, categorical, numeric = CRITEO_LABEL, list(CRITEO_CATEGORICAL), list(CRITEO_NUMERIC)
        # Criteo's integer features are counts with heavy tails; log_norm clips negatives (I2 has
        # -1..-3) to 0 before log1p, in the stats and in the graph alike (models.inputs).
        numeric_transform = "log_norm"
    elif fmt == "obd":
        if label or categorical or numeric:
            raise ValueError("--label/--categorical/--numeric are for --format csv; the OBD's columns are fixed")
        from analysis import open_bandit

        frame = open_bandit.read(path, max_rows)
        label, categorical, numeric = open_bandit.LABEL, list(open_bandit.CATEGORICAL), list(open_bandit.NUMERIC)
        numeric_transform = "norm"
    elif fmt == "csv":
        label, categorical, numeric = _check_csv_columns(path, label, categorical or [], numeric or [])
        frame = _read_csv(path, label, categorical, numeric, max_rows)
        numeric_transform = "norm"
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")

    labels = _labels(frame.pop(label), path, label)
    features = _features(categorical, numeric, numeric_transform, source=path.name)
    _fill_missing(frame, [*categorical, *numeric], features)
    log(f"read {len(frame):,} rows x {len(features)} features from {path}")
    return {**_train_and_score(cfg, frame, labels, features, log), "seconds": round(time.perf_counter() - started, 2)}


def _read_criteo(path: Path, max_rows: int | None) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    # category dtype keeps each distinct hash once (cells are codes), where object columns would
    # hold a Python str per cell: 26 such columns dominate the memory of a large file.
    dtypes: dict[str, Any] = {CRITEO_LABEL: np.float32, **dict.fromkeys(CRITEO_NUMERIC, np.float32)}
    dtypes.update(dict.fromkeys(CRITEO_CATEGORICAL, "category"))
    names = [CRITEO_LABEL, *CRITEO_NUMERIC, *CRITEO_CATEGORICAL]
    try:
        return pd.read_csv(
            path, sep="\t", header=None, names=names, dtype=dtypes, nrows=max_rows, quoting=csv.QUOTE_NONE
        )
    except ValueError as err:  # pandas.errors.ParserError is one too
        raise ValueError(f"{path} is not a Criteo TSV (label, 13 integer, 26 categorical columns): {err}") from err


def _check_csv_columns(
    path: Path, label: str | None, categorical: list[str], numeric: list[str]
) -> tuple[str, list[str], list[str]]:
    """Validate the csv column arguments against the file's header, before reading any data."""
    import pandas as pd

    if not label:
        raise ValueError("--format csv needs --label")
    if not categorical and not numeric:
        raise ValueError("--format csv needs feature columns: --categorical and/or --numeric")
    named = [label, *categorical, *numeric]
    repeated = sorted({c for c in named if named.count(c) > 1})
    if repeated:
        raise ValueError(f"columns named more than once (label, categorical, numeric): {repeated}")
    header = list(pd.read_csv(path, nrows=0).columns)
    missing = [c for c in named if c not in header]
    if missing:
        raise ValueError(f"columns not in the header of {path}: {missing} (header: {header})")
    return label, categorical, numeric


def _read_csv(path: Path, label: str, categorical: list[str], numeric: list[str], max_rows: int | None) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    dtypes: dict[str, Any] = {label: np.float32, **dict.fromkeys(numeric, np.float32)}
    dtypes.update(dict.fromkeys(categorical, "category"))  # read_csv parses categories as strings
    try:
        return pd.read_csv(path, usecols=list(dtypes), dtype=dtypes, nrows=max_rows)
    except ValueError as err:
        raise ValueError(f"{path}: label and numeric columns must be numbers: {err}") from err


def _labels(column: pd.Series, path: Path, name: str) -> Any:
    import numpy as np

    values = column.to_numpy(dtype=np.float32)
    if not np.isin(values, (0.0, 1.0)).all():  # NaN (an empty label) is not in the set either
        raise ValueError(f"{path}: label column {name!r} must hold only 0 and 1")
    if np.unique(values).size < 2:
        raise ValueError(f"{path}: label column {name!r} holds a single class; nothing to rank")
    return values


def _features(categorical: Sequence[str], numeric: Sequence[str], numeric_transform: str, source: str) -> list[Feature]:
    """One ``Feature`` per column, named after it (made a valid Keras layer name)."""
    from models.features import Feature

    features = [Feature(_name(c), "request", "string", "hash", f"{source}:{c}", "") for c in categorical]
    features += [Feature(_name(c), "request", "float32", numeric_transform, f"{source}:{c}", 0.0) for c in numeric]
    names = [f.name for f in features]
    if len(set(names)) < len(names):
        raise ValueError(f"feature columns collide once made valid names: {names}")
    return features


def _name(column: str) -> str:
    return re.sub(r"\W", "_", str(column).strip()) or "unnamed"


def _fill_missing(frame: pd.DataFrame, columns: Sequence[str], features: Sequence[Feature]) -> None:
    """In place: ``columns`` renamed to the names of ``features`` (same order), nulls replaced by defaults.

    The result is what ``models.frames.fill_defaults`` makes of these dtypes, but without its
    per-cell object copies, which a file of tens of millions of rows cannot afford. Categoricals
    stay ``category``: their values are ``str``, and ``to_tensors`` converts them per split.
    """
    frame.rename(columns={c: f.name for c, f in zip(columns, features, strict=True)}, inplace=True)
    for feature in features:
        column = frame[feature.name]
        if feature.categorical and feature.default not in column.cat.categories:
            column = column.cat.add_categories([feature.default])
        frame[feature.name] = column.fillna(feature.default)


def _train_and_score(
    cfg: PctrConfig, frame: pd.DataFrame, labels: Any, features: list[Feature], log: Callable[[str], None]
) -> dict[str, Any]:
    from models.baseline import build_logistic, fit_logistic
    from models.deepfm import build_deepfm, start_from_baseline
    from models.frames import compute_feature_stats
    from models.inputs import make_dataset
    from models.metrics import auc, logloss
    from models.search import grid, search
    from models.training import Checkpoints, examples_per_second, train, trial_summary

    n_train = int(len(frame) * TRAIN_FRACTION)
    n_fit = n_train - int(n_train * VALIDATION_FRACTION)
    if n_fit < 1 or n_fit == n_train or n_train == len(frame):
        raise ValueError(f"{len(frame)} rows are too few for a train/validation/test split")
    parts = {"fit": slice(0, n_fit), "validation": slice(n_fit, n_train), "test": slice(n_train, None)}
    numeric = [f for f in features if not f.categorical]
    stats = compute_feature_stats(
        {f.name: frame[f.name].to_numpy()[: parts["fit"].stop] for f in features},
        features,
        max_buckets=cfg.train.max_hash_buckets,
    )
    batch = cfg.train.batch_size
    fit_ds = make_dataset(frame.iloc[parts["fit"]], labels[parts["fit"]], batch, features, shuffle_seed=cfg.train.seed)
    # prediction needs no gradients: bigger batches, fewer steps
    val_ds = make_dataset(frame.iloc[parts["validation"]], labels[parts["validation"]], 4 * batch, features)
    test_ds = make_dataset(frame.iloc[parts["test"]], labels[parts["test"]], 4 * batch, features)
    # the baseline's full-batch solver reads the fit rows once, in order
    whole_fit_ds = make_dataset(frame.iloc[parts["fit"]], labels[parts["fit"]], 4 * batch, features)
    del frame  # the datasets hold their own tensors
    test_labels = labels[parts["test"]]

    def score(model: Any) -> dict[str, float | None]:
        preds = model.predict(test_ds, verbose=0).ravel()
        return {"auc": auc(test_labels, preds), "logloss": logloss(test_labels, preds)}

    log(f"fitting logistic regression (Newton-CG) on {n_fit:,} rows, validating on {n_train - n_fit:,}")
    baseline = build_logistic(features, stats, cfg.train)
    baseline_fit = fit_logistic(
        baseline, whole_fit_ds, val_ds, cfg.train.baseline_c_values, cfg.train.baseline_max_iterations, log
    )

    settings = grid(cfg.train.search_learning_rates, cfg.train.search_embedding_weight_decay)
    log(f"training DeepFM on the same rows, {len(settings)} settings")
    with tempfile.TemporaryDirectory(prefix="pctr-search-") as checkpoints:

        def fit_deepfm(hyperparameters: Any, epochs: int) -> tuple[float, tuple[Any, dict[str, Any]], dict[str, Any]]:
            """A fresh DeepFM from the baseline, trained on from its trial's checkpoint to ``epochs``."""
            trial = f"lr{hyperparameters.learning_rate:g}-decay{hyperparameters.embedding_weight_decay:g}"
            model = build_deepfm(features, stats, hyperparameters)
            start_from_baseline(model, baseline)
            history = train(
                model, fit_ds, val_ds, hyperparameters, log=log, epochs=epochs,
                checkpoints=Checkpoints(Path(checkpoints) / trial, trial),
            )  # fmt: skip
            return history["best_val_logloss"], (model, history), trial_summary(history)

        searched = search(settings, cfg.train, fit_deepfm, log)
    model, history = searched.fitted
    return {
        "model": score(model),
        "search": {"best": asdict(searched.best), "trials": searched.trials},
        "baseline": score(baseline),
        "baseline_fit": baseline_fit.to_dict(),
        # DeepFM starts from the baseline and keeps that start unless it beats it: never above the baseline's
        "validation_logloss": {"model": history["best_val_logloss"], "baseline": baseline_fit.val_logloss},
        "rows": {"train": n_train, "test": len(test_labels)},
        "validation_rows": n_train - n_fit,
        "base_rate": round(float(test_labels.mean()), 6),
        "features": {"categorical": [f.name for f in features if f.categorical], "numeric": [f.name for f in numeric]},
        "examples_per_second": examples_per_second(history),
    }
