"""MLflow tracking settings shared by every stage."""

from __future__ import annotations

from rare.config.base import Section


class TrackingParams(Section):
    enabled: bool = True
    experiment: str = "rare"
    # The plain file store is refused by MLflow 3: always an explicit sqlite URI under mlruns/.
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
