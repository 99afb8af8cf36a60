"""MLflow runs: one parent run per pipeline run, one nested child run per stage unit.

DVC runs each stage in its own process, so the parent is found, not inherited:
``RARE_PARENT_RUN_ID`` (set by ``flows/pipeline.py``, which also ends it) wins; a bare ``dvc repro`` or
``dvc exp run`` attaches to the parent of the same commit, params.yaml content and DVC experiment, creating it
on first use, and every child run that ends also ends that parent with its status, so it never stays
RUNNING after the last stage.

Child runs are opened when their work starts and end FINISHED or FAILED with it. Every run carries the
git commit, a dirty flag, the DVC experiment name (under ``dvc exp run``) and, where a stage reads an
M-BEIR root, that root's content digest.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rare.config.tracking import TrackingParams
from rare.hashing import file_digest, key_digest

PARENT_ENV = "RARE_PARENT_RUN_ID"
DVC_EXP_ENV = "DVC_EXP_NAME"  # set by `dvc exp run` for the stage commands it runs
# Without it the MLflow 3 UI guesses "GenAI" for an experiment and opens on traces instead of runs.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def _sqlite_path(tracking_uri: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(tracking_uri).database)


def store_uri(tracking_uri: str) -> str:
    """A relative sqlite URI made absolute against the current directory. MLflow caches one store per
    URI string in a process, so a relative one would keep pointing at the folder it was first used in."""
    if not tracking_uri.startswith("sqlite:"):
        return tracking_uri
    path = Path(_sqlite_path(tracking_uri))
    return tracking_uri if path.is_absolute() else f"sqlite:///{path.resolve()}"


def setup(params: TrackingParams) -> str:
    """Point MLflow at the sqlite store and return the experiment id.

    A new experiment's artifact location is a ``rare-project:`` URI (``rare.artifact_store``) when the
    configured root is relative, so runs and logged models resolve against the checkout they are read
    in, and a copied or moved checkout writes only into itself. Only MLflow's public API is used: an
    experiment made elsewhere keeps the location it was made with (MLflow offers no call to change it).
    """
    import mlflow

    from rare import artifact_store

    Path("mlruns").mkdir(exist_ok=True)
    mlflow.set_tracking_uri(store_uri(params.tracking_uri))
    exp = mlflow.get_experiment_by_name(params.experiment)
    if exp is None:
        return mlflow.create_experiment(params.experiment, artifact_store.location(params.artifact_root),
                                        tags=EXPERIMENT_TAGS)
    for key, value in EXPERIMENT_TAGS.items():
        if exp.tags.get(key) != value:  # a store made before the tag existed
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def _git(*args: str) -> str | None:
    """git's answer for the current directory: the cache is per directory, since one process (a test
    session, a flow) may run stages from several checkouts, or from a folder that is none."""
    return _git_in(os.getcwd(), *args)


@functools.cache
def _git_in(cwd: str, *args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


@functools.cache
def data_digest(root: str | Path) -> str:
    """Content digest of an M-BEIR root (every file's bytes and path), or of the pointer DVC tracks for
    an external one: the same data gives the same digest in any checkout."""
    root = Path(root)
    return key_digest({f.relative_to(root).as_posix(): file_digest(f) for f in root.rglob("*") if f.is_file()})


LOCK_FILE = Path("dvc.lock")


def pipeline_outputs(lock: Path = LOCK_FILE) -> list[str]:
    """The tracked files a pipeline run rewrites itself: dvc.lock and every stage output it lists
    (metrics, plots, committed checkpoints). Changing them is the run's result, not a change of the code
    or params it ran, so the dirty flag leaves them out: else every stage after the first reads dirty."""
    import yaml

    if not lock.exists():
        return []
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages") or {}
    return [lock.as_posix(), *sorted({out["path"] for stage in stages.values() for out in stage.get("outs", [])})]


def run_tags(data: str | Path | None = None) -> dict[str, str]:
    """What every run records about where it came from."""
    commit = _git("rev-parse", "HEAD")
    tags = {}
    if commit:
        excluded = [f":(exclude){path}" for path in pipeline_outputs()]
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded))
        tags |= {"mlflow.source.git.commit": commit, "rare.git_commit": commit, "rare.git_dirty": str(dirty).lower()}
    if os.environ.get(DVC_EXP_ENV):
        tags["rare.dvc_experiment"] = os.environ[DVC_EXP_ENV]
    if data is not None and Path(data).exists():
        tags["rare.data_digest"] = data_digest(Path(data).resolve())
    return tags


def _config_key(params_file: str | Path) -> str:
    path = Path(params_file)
    return key_digest(file_digest(path) if path.exists() else "", _git("rev-parse", "HEAD") or "",
                      os.environ.get(DVC_EXP_ENV, ""))


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
    name = os.environ.get(DVC_EXP_ENV) or f"pipeline-{key[:8]}"
    run = client.create_run(exp_id, run_name=name,
                            tags={"rare.role": "pipeline", "rare.pipeline_key": key, **run_tags()})
    return run.info.run_id


def create_child_run(params: TrackingParams, stage: str, name: str, tags: dict[str, str] | None = None,
                     data: str | Path | None = None, started_at: float | None = None) -> str:
    """Create a RUNNING child run without activating it (Lightning's MLFlowLogger takes the id).
    ``started_at`` (``time.time()``) is when its work began, if that was before the run could be made."""
    from mlflow.tracking import MlflowClient

    parent = parent_run_id(params)
    exp_id = setup(params)
    all_tags = {"mlflow.parentRunId": parent, "rare.stage": stage, "rare.role": "stage", **run_tags(data),
                **(tags or {})}
    start_ms = None if started_at is None else int(started_at * 1000)
    return MlflowClient().create_run(exp_id, start_time=start_ms, run_name=name, tags=all_tags).info.run_id


def end_run(run_id: str, status: str) -> None:
    """End a child run; a parent no pipeline flow owns (``dvc repro``, ``dvc exp run``) ends with it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_terminated(run_id, status)
    if not os.environ.get(PARENT_ENV):
        parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
        if parent:
            client.set_terminated(parent, status)


@contextmanager
def child_run(params: TrackingParams, stage: str, name: str, tags: dict[str, str] | None = None,
              data: str | Path | None = None, *, active: bool = True,
              started_at: float | None = None) -> Iterator[str | None]:
    """A child run for the length of the block: FINISHED when it completes, FAILED when it raises,
    KILLED on Ctrl-C. ``active`` makes it MLflow's active run; ``started_at`` backdates its start to when
    the work began. Yields the run id (None: tracking is off)."""
    if not params.enabled:
        yield None
        return
    import mlflow

    run_id = create_child_run(params, stage, name, tags, data, started_at)
    status = "FAILED"
    try:
        if active:
            with mlflow.start_run(run_id=run_id):
                yield run_id
        else:
            yield run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        end_run(run_id, status)


@contextmanager
def deferred_child_run(params: TrackingParams, stage: str, name: str, tags: dict[str, str] | None = None,
                       data: str | Path | None = None) -> Iterator[Callable[[], str | None]]:
    """``child_run`` (inactive) made when the block first asks for its id, or when the block ends, and
    stamped with the time the block began. For a light stage: its work starts without waiting 1.6 s for
    MLflow's import, and its run still spans that work and ends with its outcome."""
    started = time.time()
    with ExitStack() as stack:
        made: list[str | None] = []

        def run_id() -> str | None:
            if not made:
                made.append(stack.enter_context(child_run(params, stage, name, tags, data, active=False,
                                                          started_at=started)))
            return made[0]

        try:
            yield run_id
        except BaseException:
            run_id()  # the failure ends a run that exists (FAILED, or KILLED on Ctrl-C)
            raise
        run_id()
