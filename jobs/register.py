"""Registry stage: one MLflow run per (daily or hourly run, trained model) with its lineage, a model version,
and the ``champion`` alias moved if the gate passed and the model is not older than the live one
(``core.champion.Champion.recency``: the daily run it descends from, then its own day or hour).

Runs and versions carry ``cadence`` (``daily`` or ``hourly``); an hourly refresh also the daily version it
descends from (``daily_version``) and the version it was warm-started from.

A retried ``register`` finds its run by the day and the model's fingerprint and reuses the run and its
model version instead of logging another. A backfilled (older) day is registered but not promoted:
moving the alias to it would rewind what is live; ``pctr promote VERSION`` does that on purpose.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from core.champion import Champion, champion, crown
from core.config import PctrConfig
from core.io import Stats, read_json, sha256_file, write_stats
from core.layout import (
    FEATURE_STATS,
    RANKER_WEIGHTS,
    Layout,
    calibrator_path,
    evaluation_dir,
    ranker_dir,
    retrieval_dir,
)
from core.tracking import code_version, mlflow_client, tracking_uri
from jobs.evaluate import load_evaluation
from jobs.train import trained_config
from jobs.train_hourly import base_run
from jobs.training_set import training_set_sources
from models.features import RANKER_SERVICE

RUN_KEY_TAG = "pctr_run_key"
FINGERPRINT_TAG = "pctr_model_fingerprint"


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": (",".join(map(str, v)) if isinstance(v, tuple | list) else v) for k, v in values.items()}


def lineage(cfg: PctrConfig, ds: str) -> dict[str, str]:
    """What the model was made from: the code, the configuration it was trained with, the data and its features."""
    layout = Layout(cfg.home)
    cfg = trained_config(cfg, ds)
    sources = training_set_sources(cfg, ds)
    partitions = sorted({source for split in ("train", "validation") for source in sources[split].values()})
    checksums = {key: read_json(layout.joined(key) / "_stats.json")["checksum"] for key in partitions}
    splits = read_json(layout.training_set(ds) / "_stats.json")["splits"]
    config = cfg.model_dump_json(exclude={"home"})
    return {
        "code_version": code_version(),
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
        "joined_checksums": json.dumps(checksums, sort_keys=True),
        "training_set_rows": json.dumps({split: counts["rows"] for split, counts in splits.items()}, sort_keys=True),
        "feature_service": RANKER_SERVICE,
    }


def _logged_run(client: Any, run_key: str, fingerprint: str) -> tuple[str, str | None] | None:
    """(run id, model version or None) of a previous attempt at this day's run of this very model."""
    from core.tracking import EXPERIMENT

    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.{RUN_KEY_TAG} = '{run_key}' and tags.{FINGERPRINT_TAG} = '{fingerprint}'",
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    return run_id, str(versions[0].version) if versions else None


def _log_run(cfg: PctrConfig, ds: str, evaluation: Stats, tags: dict[str, str], run_id: str | None) -> tuple[str, str]:
    """Log params, metrics, lineage, plots and the ranker to the day's MLflow run (a new one unless an
    attempt that stopped before registering left one); register the ranker."""
    import mlflow

    from models.features import MODEL_FEATURES
    from models.pyfunc import RankerPyfunc

    retrieval = read_json(retrieval_dir(cfg, base_run(cfg, ds)["base_ds"]) / "_stats.json")
    training = read_json(ranker_dir(cfg, ds) / "_stats.json")
    metrics = {k: v for k, v in evaluation["metrics"].items() if v is not None}
    metrics.update(
        {
            "examples_per_second": training["examples_per_second"],
            "index_size": retrieval["index_size"],
            **{k: v for k, v in retrieval.items() if k.startswith("recall_at_") and v is not None},
        }
    )
    trained_with = trained_config(cfg, ds)
    setting = training["setting"]
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"{tags['cadence']}-{ds}") as active:
        mlflow.set_tags({**tags, **{f"setting.{key}": str(setting[key]) for key in ("searched", "searched_on")}})
        mlflow.log_params(
            {**_flat("train", trained_with.train.model_dump()), **_flat("join", trained_with.join.model_dump())}
        )
        mlflow.log_metrics(metrics)
        _log_trials(active.info.run_id, training["search"])
        mlflow.log_artifacts(str(evaluation_dir(cfg, ds)), "evaluation")
        info = mlflow.pyfunc.log_model(
            name="ranker",
            python_model=RankerPyfunc(),
            artifacts={
                "saved_model": str(ranker_dir(cfg, ds) / "saved_model"),
                "calibrator": str(calibrator_path(cfg, ds)),
                "weights": str(ranker_dir(cfg, ds) / RANKER_WEIGHTS),
                "feature_stats": str(ranker_dir(cfg, ds) / FEATURE_STATS),
            },
            # explicit requirements: inferring them would load TensorFlow in a subprocess
            pip_requirements=["pctr", "tensorflow-cpu==2.21.0"],
            registered_model_name=cfg.model_name,
            metadata={"features": [f.name for f in MODEL_FEATURES], "ds": ds},
        )
        return active.info.run_id, str(info.registered_model_version)


def _log_trials(parent_run_id: str, search: dict[str, Any] | None) -> None:
    """The search's trials as child runs of the day's run (once: a retried register finds them logged)."""
    import mlflow

    if not search or mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'").shape[0]:
        return
    for number, trial in enumerate(search["trials"], start=1):
        setting = {key: trial[key] for key in search["best"]}
        with mlflow.start_run(run_name=f"trial-{number}", nested=True):
            mlflow.set_tag("chosen", str(setting == search["best"]))
            mlflow.log_params(_flat("train", setting))
            mlflow.log_metrics({key: value for key, value in trial.items() if key not in setting})


def promotion(evaluation: Stats, live: Champion | None, candidate: Champion) -> tuple[bool, str]:
    """Whether this version becomes champion, and why (or why not)."""
    if not evaluation["promote"]:
        return False, f"refused by the gate: {evaluation['gate_reason']}"
    # a rerun of the live model's own run may replace it (the gate compared them); an older one may not
    if live is not None and live.version != candidate.version and live.recency > candidate.recency:
        return False, (
            f"registered only: champion {live.version} closed {live.ds}, after {candidate.ds}; "
            f"`pctr promote {candidate.version}` makes this version live"
        )
    return True, f"promoted: {evaluation['gate_reason']}"


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Register the day's ranker once (a retry reuses the run and version); move ``champion`` if it may go live."""
    started = time.time()
    client = mlflow_client(cfg)
    evaluation = load_evaluation(cfg, ds)
    base = base_run(cfg, ds)
    run_key = f"{base['cadence']}/{ds}"
    fingerprint = sha256_file(ranker_dir(cfg, ds) / RANKER_WEIGHTS)
    run_id, version = _logged_run(client, run_key, fingerprint) or (None, None)
    if version is None:
        tags = {
            "ds": ds,
            **{key: str(value) for key, value in base.items() if value is not None},
            RUN_KEY_TAG: run_key,
            FINGERPRINT_TAG: fingerprint,
            "gate_reason": evaluation["gate_reason"],
            **{f"lineage.{k}": v for k, v in lineage(cfg, ds).items()},
        }
        run_id, version = _log_run(cfg, ds, evaluation, tags, run_id)
    for key, value in {"ds": ds, **base}.items():
        if value is not None:
            client.set_model_version_tag(cfg.model_name, version, key, str(value))
    candidate = Champion(version, ds, base["base_ds"])
    promoted, reason = promotion(evaluation, champion(client, cfg.model_name), candidate)
    client.set_model_version_tag(cfg.model_name, version, "promotion", reason)
    client.set_tag(run_id, "promotion", reason)
    if promoted:
        crown(client, cfg.model_name, version)
    live = champion(client, cfg.model_name)
    stats: Stats = {
        "stage": "register",
        "ds": ds,
        "run_id": run_id,
        "model_name": cfg.model_name,
        "model_version": version,
        "model_uri": f"models:/{cfg.model_name}/{version}",
        "cadence": base["cadence"],
        "promoted": promoted,
        "promotion": reason,
        "champion_version": live.version if live else None,
        "tracking_uri": tracking_uri(cfg),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(Layout(cfg.home).stage_output("register", ds), stats)
