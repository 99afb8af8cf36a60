"""MLflow runs: one parent run per pipeline run, one nested child run per stage unit.

DVC runs each stage in its own process, so the parent is found, not inherited:
``RARE_PARENT_RUN_ID`` (set by ``flows/pipeline.py``) wins; a bare ``dvc repro`` attaches
to the parent of the same params.yaml content, creating it on first use.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rare.config.tracking import TrackingParams

PARENT_ENV = "RARE_PARENT_RUN_ID"


def setup(params: TrackingParams) -> str:
    """Point MLflow at the sqlite store and return the experiment id."""
    import mlflow

    Path("mlruns").mkdir(exist_ok=True)
    mlflow.set_tracking_uri(params.tracking_uri)
    exp = mlflow.get_experiment_by_name(params.experiment)
    if exp is None:
        location = Path(params.artifact_root).resolve().as_uri()
        return mlflow.create_experiment(params.experiment, artifact_location=location)
    return exp.experiment_id


def _config_key(params_file: str | Path) -> str:
    path = Path(params_file)
    content = path.read_bytes() if path.exists() else b""
    return hashlib.sha256(content).hexdigest()[:16]


def parent_run_id(params: TrackingParams, params_file: str | Path = "params.yaml") -> str:
    from mlflow.tracking import MlflowClient

    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    exp_id = setup(params)
    key = _config_key(params_file)
    client = MlflowClient()
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`rare.pipeline_key` = '{key}' and tags.`rare.role` = 'pipeline'",
        max_results=1, order_by=["attributes.start_time DESC"],
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=f"pipeline-{key[:8]}",
                            tags={"rare.role": "pipeline", "rare.pipeline_key": key})
    return run.info.run_id


def create_child_run(params: TrackingParams, stage: str, name: str, tags: dict[str, str] | None = None) -> str | None:
    """Create a child run without activating it (Lightning's MLFlowLogger takes the id)."""
    if not params.enabled:
        return None
    from mlflow.tracking import MlflowClient

    parent = parent_run_id(params)
    exp_id = setup(params)
    all_tags = {"mlflow.parentRunId": parent, "rare.stage": stage, "rare.role": "stage", **(tags or {})}
    return MlflowClient().create_run(exp_id, run_name=name, tags=all_tags).info.run_id


@contextmanager
def child_run(params: TrackingParams, stage: str, name: str, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Active nested run for a stage unit; yields None when tracking is disabled."""
    if not params.enabled:
        yield None
        return
    import mlflow

    run_id = create_child_run(params, stage, name, tags)
    with mlflow.start_run(run_id=run_id) as run:
        yield run
