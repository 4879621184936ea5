"""The MLflow tracking store and model registry of a pctr home: its URI, a client, a registered version's files.

The register stage writes to it; the train stage reads a registered version to warm start from; ``make ui``
serves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import PctrConfig
from core.layout import FEATURE_STATS, RANKER_WEIGHTS, Layout

EXPERIMENT = "pctr-daily"


def tracking_uri(cfg: PctrConfig) -> str:
    """``tracking.uri``, or the embedded store: sqlite in this home."""
    return cfg.tracking.uri or f"sqlite:///{Layout(cfg.home).mlflow_db}"


def mlflow_client(cfg: PctrConfig, experiment: str = EXPERIMENT) -> Any:
    """Point MLflow at the configured store (``tracking_uri``), runs going to ``experiment`` (created on first use).

    The embedded store keeps artifacts in this home; a tracking server keeps them where it was told to.
    """
    import mlflow

    layout = Layout(cfg.home)
    artifact_location = None
    if cfg.tracking.uri is None:
        layout.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = layout.mlflow_artifacts.as_uri()
    mlflow.set_tracking_uri(tracking_uri(cfg))
    mlflow.set_registry_uri(tracking_uri(cfg))
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    return mlflow.MlflowClient()


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


def git_state() -> dict[str, Any] | None:
    """This checkout's commit and whether it has uncommitted changes (None outside a git checkout)."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return None


def code_version() -> str:
    """The commit of this checkout (``-dirty`` with uncommitted changes), or the installed package's version."""
    from importlib.metadata import version

    state = git_state()
    if state is None:
        return f"pctr {version('pctr')}"
    return state["commit"] + ("-dirty" if state["dirty"] else "")
