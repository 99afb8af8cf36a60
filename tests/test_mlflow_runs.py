"""MLflow runs: relative artifact locations, run status under `dvc repro` / `dvc exp run`, provenance tags."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rare import mlflow_runs as rare_tracking
from rare.config.tracking import TrackingParams


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout with its own params.yaml, as a stage process sees it (no pipeline flow owning the parent)."""
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "params.yaml").write_text("tracking: {experiment: rare-test}\n")
    monkeypatch.chdir(root)
    monkeypatch.delenv(rare_tracking.PARENT_ENV, raising=False)
    monkeypatch.delenv(rare_tracking.DVC_EXP_ENV, raising=False)
    return root


def _log_a_file(name: str) -> str:
    with rare_tracking.child_run(TrackingParams(experiment="rare-test"), "data", name) as run_id:
        import mlflow

        mlflow.log_text("hello", f"{name}.txt")
    return run_id


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_copied_checkout_writes_artifacts_only_into_itself(project: Path, monkeypatch: pytest.MonkeyPatch):
    first = _log_a_file("first")
    exp = MlflowClient().get_experiment_by_name("rare-test")
    assert exp.artifact_location == "rare-project:mlruns/artifacts"  # stored as written, not made absolute
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert (project / "mlruns/artifacts" / first / "artifacts/first.txt").is_file()

    copy = project.parent / "copy"
    shutil.copytree(project, copy)
    before = _files(project)
    monkeypatch.chdir(copy)
    second = _log_a_file("second")
    parent = MlflowClient().get_run(second).data.tags["mlflow.parentRunId"]
    MlflowClient().log_text(parent, "on the parent", "parent.txt")  # a run created in the original checkout

    assert _files(project) == before
    assert (copy / "mlruns/artifacts" / second / "artifacts/second.txt").is_file()
    assert (copy / "mlruns/artifacts" / parent / "artifacts/parent.txt").is_file()


def test_no_sql_on_mlflow_tables_remains():
    """MLflow's tables are MLflow's: rare reaches them only through its public API (no sqlite3, no
    SQL statement on a table MLflow owns)."""
    import re

    root = Path(__file__).resolve().parents[1]
    tables = "experiments|runs|logged_models|model_versions|registered_models|metrics|params|tags|latest_metrics"
    sql = re.compile(rf"\b(UPDATE\s+({tables})\s+SET|(INSERT\s+INTO|DELETE\s+FROM|ALTER\s+TABLE)\s+({tables})\b"
                     rf"|SELECT\s[^\n]*\bFROM\s+({tables})\b)", re.IGNORECASE)
    found = []
    for path in [*(root / "src").rglob("*.py"), *(root / "flows").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        if sql.search(text) or ("sqlite3" in text and "mlflow" in text):
            found.append(path.relative_to(root).as_posix())
    assert found == []


def test_runs_end_with_their_outcome_and_end_the_parent_under_dvc(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(rare_tracking.DVC_EXP_ENV, "lr5e-4")
    tracking = TrackingParams(experiment="rare-test")
    ok = _log_a_file("data")
    client = MlflowClient()
    parent = client.get_run(client.get_run(ok).data.tags["mlflow.parentRunId"])
    assert client.get_run(ok).info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert parent.info.run_name == "lr5e-4" and parent.data.tags["rare.dvc_experiment"] == "lr5e-4"
    assert client.get_run(ok).data.tags["rare.dvc_experiment"] == "lr5e-4"

    with pytest.raises(ValueError, match="bad input"):
        with rare_tracking.child_run(tracking, "train", "train-none") as failed:
            raise ValueError("bad input")
    failed_run = client.get_run(failed)
    assert failed_run.info.status == "FAILED" and failed_run.info.end_time >= failed_run.info.start_time
    assert failed_run.data.tags["mlflow.parentRunId"] == parent.info.run_id  # same params, same experiment
    assert client.get_run(parent.info.run_id).info.status == "FAILED"


def test_a_deferred_run_spans_its_work_and_ends_with_its_outcome(project: Path):
    """`rare report` works before MLflow is imported: its run is made afterwards, stamped with the start."""
    tracking = TrackingParams(experiment="rare-test")
    before = time.time()
    with rare_tracking.deferred_child_run(tracking, "report", "report") as run_id:
        time.sleep(0.3)  # the work, before any run exists
        made = run_id()
        assert run_id() == made  # made once
    client = MlflowClient()  # after the run set the tracking URI
    run = client.get_run(made)
    assert run.info.status == "FINISHED" and run.info.run_name == "report"
    assert before * 1000 - 1 <= run.info.start_time <= before * 1000 + 100  # the block's start, not the creation
    assert run.info.end_time - run.info.start_time >= 300

    with pytest.raises(OSError, match="disk full"):
        with rare_tracking.deferred_child_run(tracking, "report", "report-failing"):
            raise OSError("disk full")  # fails before it ever asked for its run
    failed = client.search_runs([rare_tracking.setup(tracking)], "attributes.run_name = 'report-failing'")
    assert [r.info.status for r in failed] == ["FAILED"]

    with rare_tracking.child_run(tracking, "evaluate", "eval-x", started_at=before - 5) as backdated:
        pass
    assert client.get_run(backdated).info.start_time == int((before - 5) * 1000)


def test_pipeline_owned_parent_is_left_to_the_pipeline(project: Path, monkeypatch: pytest.MonkeyPatch):
    exp_id = rare_tracking.setup(TrackingParams(experiment="rare-test"))
    owner = MlflowClient().create_run(exp_id, run_name="pipeline", tags={"rare.role": "pipeline"}).info.run_id
    monkeypatch.setenv(rare_tracking.PARENT_ENV, owner)
    child = _log_a_file("data")
    assert MlflowClient().get_run(child).data.tags["mlflow.parentRunId"] == owner
    assert MlflowClient().get_run(owner).info.status == "RUNNING"


def test_runs_record_the_commit_dirty_flag_and_the_data_digest(project: Path, tiny_root: Path):
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
                   check=True)
    rare_tracking._git_in.cache_clear()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    with rare_tracking.child_run(TrackingParams(experiment="rare-test"), "evaluate", "eval-none", data=tiny_root) as run_id:
        pass
    tags = MlflowClient().get_run(run_id).data.tags
    assert tags["rare.git_commit"] == commit == tags["mlflow.source.git.commit"]
    assert tags["rare.git_dirty"] == "false"

    copy = project / "copied-root"
    shutil.copytree(tiny_root, copy)
    assert tags["rare.data_digest"] == rare_tracking.data_digest(copy)  # content, not location
    changed = shutil.copytree(tiny_root, project / "changed-root")
    (changed / "qrels").rename(changed / "qrels-moved")
    assert rare_tracking.data_digest(changed) != tags["rare.data_digest"]


def test_stages_run_from_a_folder_outside_git_share_a_parent_with_fresh_processes(project: Path, tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch):
    """One process that asked git inside a checkout, then runs stages in a folder that is none (a test
    session, a flow), must key the parent as a fresh stage process there does: no commit, one parent."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    checkout = tmp_path / "a-checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
                   check=True)
    assert "rare.git_commit" in rare_tracking.run_tags()
    monkeypatch.chdir(project)
    assert "rare.git_commit" not in rare_tracking.run_tags()
    child = _log_a_file("data")
    in_process = MlflowClient().get_run(child).data.tags["mlflow.parentRunId"]
    script = ("from rare import mlflow_runs as t; from rare.config.tracking import TrackingParams;"
              "print(t.parent_run_id(TrackingParams(experiment='rare-test')))")
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip().splitlines()[-1] == in_process


def test_a_pipeline_rewriting_its_own_outputs_leaves_the_checkout_clean(project: Path):
    """Each stage rewrites dvc.lock and its committed metrics; that alone is no change of code or params."""
    (project / "metrics").mkdir()
    (project / "metrics/train_none.json").write_text('{"loss": 1}')
    (project / "dvc.lock").write_text("schema: '2.0'\nstages:\n  train_none:\n    cmd: rare train none\n"
                                      "    outs:\n    - path: metrics/train_none.json\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)

    def dirty() -> str:
        rare_tracking._git_in.cache_clear()
        return rare_tracking.run_tags()["rare.git_dirty"]

    (project / "metrics/train_none.json").write_text('{"loss": 0.5}')
    with (project / "dvc.lock").open("a") as lock:
        lock.write("  eval_none:\n    cmd: rare evaluate none\n")
    assert dirty() == "false"
    (project / "params.yaml").write_text("tracking: {experiment: rare-test, enabled: true}\n")
    assert dirty() == "true"

    def parent_of(run_id: str) -> str:
        return MlflowClient().get_run(run_id).data.tags["mlflow.parentRunId"]

    before = parent_of(_log_a_file("data"))
    assert parent_of(_log_a_file("data")) == before  # the same commit and params: the same pipeline run
    subprocess.run([*git, "commit", "-q", "-am", "y"], check=True)
    rare_tracking._git_in.cache_clear()
    assert parent_of(_log_a_file("data")) != before  # a `dvc repro` after a commit: a new parent run


def test_a_cancelled_pipeline_run_ends_its_runs_killed(project: Path, monkeypatch: pytest.MonkeyPatch):
    """Cancelling a deployment run kills the flow's process: Prefect's hook must end what it left RUNNING."""
    from types import SimpleNamespace

    from flows.pipeline import FLOW_RUN_TAG, mark_cancelled

    params = TrackingParams(experiment="rare-test")
    exp_id = rare_tracking.setup(params)
    client = MlflowClient()
    parent = client.create_run(exp_id, run_name="pipeline-x", tags={FLOW_RUN_TAG: "flow-run-1"}).info.run_id
    monkeypatch.setenv(rare_tracking.PARENT_ENV, parent)
    running = rare_tracking.create_child_run(params, "train", "train-none")
    finished = rare_tracking.create_child_run(params, "data", "data")
    client.set_terminated(finished, "FINISHED")
    other = client.create_run(exp_id, run_name="pipeline-y", tags={FLOW_RUN_TAG: "flow-run-2"}).info.run_id

    mark_cancelled(None, SimpleNamespace(id="flow-run-1"), None)

    status = {r: client.get_run(r).info.status for r in (parent, running, finished, other)}
    assert status == {parent: "KILLED", running: "KILLED", finished: "FINISHED", other: "RUNNING"}
