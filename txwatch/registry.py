"""The model registry: MLflow, embedded by default (a SQLite store under ``lake_root``).

A training run logs its parameters, metrics and the saved Spark model (``model/``, as
``PipelineModel.save`` writes it) and registers it as a new version of ``model.name``; the
stream asks for the newest version and loads the model from its local artifact folder.
MLflow is imported here only: the stream pays its start-up time (about a second) once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from txwatch.infra.config import Conf

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXPERIMENT = "txwatch-outlier-model"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class ModelVersion:
    version: int
    run_id: str
    model_path: str  # local folder of the saved PipelineModel
    params: dict[str, str]
    metrics: dict[str, float]


def _local_root(conf: Conf) -> Path | None:
    """The folder of an embedded SQLite store (created if missing); None for a server."""
    uri = conf.model.registry(conf.lake_root)
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    return db.parent


def client(conf: Conf) -> MlflowClient:
    # MLflow 3 sends usage telemetry over the network unless told not to.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    # The SQLite store's schema migrations log a line each on a new registry.
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)

    uri = conf.model.registry(conf.lake_root)
    _local_root(conf)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(mlflow_client: MlflowClient, conf: Conf) -> str:
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    root = _local_root(conf)
    artifacts = (root / "artifacts").resolve().as_uri() if root is not None else None
    return str(mlflow_client.create_experiment(EXPERIMENT, artifact_location=artifacts))


def register(
    conf: Conf,
    model_dir: str,
    params: dict[str, Any],
    metrics: dict[str, float],
) -> ModelVersion:
    """Log a run (params, metrics, the model folder) and register it as a new version."""
    import mlflow

    mlflow_client = client(conf)
    experiment_id = _experiment_id(mlflow_client, conf)
    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(model_dir, artifact_path=MODEL_ARTIFACT)
    name = conf.model.name
    if not mlflow_client.search_registered_models(f"name = '{name}'"):
        mlflow_client.create_registered_model(name, description="txwatch outlier model")
    version = mlflow_client.create_model_version(
        name, source=f"{run.info.artifact_uri}/{MODEL_ARTIFACT}", run_id=run.info.run_id
    )
    found = newest(conf, mlflow_client)
    assert found is not None and found.version == int(version.version)
    return found


def newest(conf: Conf, mlflow_client: MlflowClient | None = None) -> ModelVersion | None:
    """The newest registered version of ``model.name``, or None if there is none."""
    mlflow_client = mlflow_client or client(conf)
    name = conf.model.name
    if not mlflow_client.search_registered_models(f"name = '{name}'"):
        return None
    versions = mlflow_client.search_model_versions(
        f"name = '{name}'", order_by=["version_number DESC"], max_results=1
    )
    if not versions:
        return None
    latest = versions[0]
    assert latest.run_id is not None, "txwatch registers every version from a run"
    run = mlflow_client.get_run(latest.run_id)
    uri = mlflow_client.get_model_version_download_uri(name, latest.version)
    parsed = urlparse(uri)
    path = url2pathname(parsed.path) if parsed.scheme in ("", "file") else uri
    return ModelVersion(
        int(latest.version), latest.run_id, path, dict(run.data.params), dict(run.data.metrics)
    )
