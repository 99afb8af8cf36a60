"""MLflow artifacts kept relative to the checkout, through MLflow's public artifact-repository plugin API.

MLflow stores a new experiment's artifact location as an absolute path (``resolve_uri_if_local``), so a
copied or moved checkout would keep writing into the old folder. A ``rare-project:<relative path>`` URI is
not local to MLflow, so it is stored as written; this repository (registered under the
``mlflow.artifact_repository`` entry point in pyproject.toml) resolves it against the project directory
(``RARE_PROJECT_DIR``, else the current one) each time a run, logged model or model version is opened.
Every process that reads these artifacts (stages, ``mlflow ui``, ``mlflow.pyfunc.load_model``) has rare
installed, so the plugin is there too.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

SCHEME = "rare-project"


def project_dir() -> Path:
    return Path(os.environ.get("RARE_PROJECT_DIR") or Path.cwd())


def location(artifact_root: str) -> str:
    """The experiment artifact location for ``artifact_root``: relative paths move with the checkout,
    absolute paths and URIs are kept as given."""
    if "://" in artifact_root or artifact_root.startswith(f"{SCHEME}:") or Path(artifact_root).is_absolute():
        return artifact_root
    return f"{SCHEME}:{Path(artifact_root).as_posix()}"


def local_path(uri: str) -> Path:
    """Where a ``rare-project:`` URI lives in this checkout."""
    return project_dir() / uri.removeprefix(f"{SCHEME}:").lstrip("/")


class ProjectArtifactRepository(LocalArtifactRepository):
    """A local artifact folder addressed relative to the project directory."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> None:
        super().__init__(local_path(artifact_uri).as_posix(), tracking_uri, registry_uri)
