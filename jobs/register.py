"""Registry stage: one MLflow run per daily run, a model version per ranker, alias ``champion`` if promoted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jobs.calibrate import calibrator_path
from jobs.config import PctrConfig
from jobs.evaluate import evaluation_dir, load_evaluation
from jobs.io import Stats, read_json, write_stats
from jobs.layout import Layout
from jobs.retrieval import retrieval_dir
from jobs.train import RANKER_WEIGHTS, ranker_dir
from jobs.training_set import FEATURE_STATS

EXPERIMENT = "pctr-daily"
CHAMPION = "champion"


def tracking_uri(cfg: PctrConfig) -> str:
    return f"sqlite:///{Layout(cfg.home).mlflow_db}"


def mlflow_client(cfg: PctrConfig) -> Any:
    """Point MLflow at this home's store (sqlite + local artifacts unless configured otherwise)."""
    import mlflow

    layout = Layout(cfg.home)
    layout.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(cfg))
    mlflow.set_registry_uri(tracking_uri(cfg))
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=layout.mlflow_artifacts.as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return mlflow.MlflowClient()


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": (",".join(map(str, v)) if isinstance(v, tuple | list) else v) for k, v in values.items()}


def run(cfg: PctrConfig, ds: str) -> Stats:
    """Log params, metrics, plots and the ranker to MLflow; register it; move ``champion`` if the gate passed."""
    import mlflow

    from models.features import MODEL_FEATURES
    from serving.pyfunc import RankerPyfunc

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


def download_ranker_weights(cfg: PctrConfig, ref: str, dest: Path) -> tuple[str, Path, Path] | None:
    """Weights and feature statistics of registered ranker version ``ref`` (alias or number), downloaded to ``dest``.

    Returns (version, weights path, feature statistics path); None when ``ref`` is an alias that is
    not set yet (the first run of a warm-started pipeline has no champion). A version number that
    does not exist raises.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow_client(cfg)
    try:
        if ref.isdigit():
            version = client.get_model_version(cfg.model_name, ref)
        else:
            version = client.get_model_version_by_alias(cfg.model_name, ref)
    except MlflowException as error:
        if ref.isdigit():
            raise LookupError(f"train.warm_start={ref}: {cfg.model_name} has no version {ref}") from error
        return None
    paths = []
    for artifact in (RANKER_WEIGHTS, FEATURE_STATS):
        uri = f"models:/{cfg.model_name}/{version.version}/artifacts/{artifact}"
        try:
            paths.append(Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest))))
        except (MlflowException, OSError) as error:
            raise LookupError(f"train.warm_start={ref}: version {version.version} has no {artifact} ({uri})") from error
    return str(version.version), paths[0], paths[1]


def _champion_version(client: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None
