"""Registry stage: one MLflow run per daily run, a model version per ranker, alias ``champion`` if promoted."""

from __future__ import annotations

import time
from typing import Any

from core.config import PctrConfig
from core.io import Stats, read_json, write_stats
from core.layout import (
    FEATURE_STATS,
    RANKER_WEIGHTS,
    Layout,
    calibrator_path,
    evaluation_dir,
    ranker_dir,
    retrieval_dir,
)
from core.tracking import mlflow_client, tracking_uri
from jobs.evaluate import load_evaluation

CHAMPION = "champion"


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": (",".join(map(str, v)) if isinstance(v, tuple | list) else v) for k, v in values.items()}


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Log params, metrics, plots and the ranker to MLflow; register it; move ``champion`` if the gate passed."""
    import mlflow

    from models.features import MODEL_FEATURES
    from models.pyfunc import RankerPyfunc

    started = time.time()
    client = mlflow_client(cfg)
    evaluation = load_evaluation(cfg, ds)
    retrieval = read_json(retrieval_dir(cfg, ds) / "_stats.json")
    training = read_json(ranker_dir(cfg, ds) / "_stats.json")
    metrics = {k: v for k, v in evaluation["metrics"].items() if v is not None}
    metrics.update(
        {
            "examples_per_second": training["examples_per_second"],
            "index_size": retrieval["index_size"],
            **{k: v for k, v in retrieval.items() if k.startswith("recall_at_") and v is not None},
        }
    )
    with mlflow.start_run(run_name=f"daily-{ds}") as active:
        mlflow.set_tags({"ds": ds, "promote": str(evaluation["promote"]), "gate_reason": evaluation["gate_reason"]})
        mlflow.log_params({**_flat("train", cfg.train.model_dump()), **_flat("join", cfg.join.model_dump())})
        mlflow.log_metrics(metrics)
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
        run_id = active.info.run_id
    version = str(info.registered_model_version)
    client.set_model_version_tag(cfg.model_name, version, "ds", ds)
    if evaluation["promote"]:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
    champion = _champion_version(client, cfg.model_name)
    stats: Stats = {
        "stage": "register",
        "ds": ds,
        "run_id": run_id,
        "model_name": cfg.model_name,
        "model_version": version,
        "model_uri": f"models:/{cfg.model_name}/{version}",
        "promoted": bool(evaluation["promote"]),
        "champion_version": champion,
        "tracking_uri": tracking_uri(cfg),
        "seconds": round(time.time() - started, 2),
    }
    return write_stats(Layout(cfg.home).stage_output("register", ds), stats)


def _champion_version(client: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None
