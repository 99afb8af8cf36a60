"""The pipeline as users run it: one `error:` line from every entry point, stages as subflows of the pipeline run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rare.repro import dvc_command, stage_env

DVC_YAML = "stages:\n  data:\n    cmd: rare data data/raw\n    params: [data]\n    outs: [data/raw]\n"


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """One temporary Prefect server for this module; its URL is handed to the pipeline's processes."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


def _project(root: Path, preset: str) -> Path:
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(dvc_command("init", "-q"), cwd=root, check=True)
    (root / "params.yaml").write_text(f"data:\n  preset: {preset}\ntracking:\n  enabled: false\n")
    (root / "dvc.yaml").write_text(DVC_YAML)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "x"], cwd=root, check=False)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return root


def _run(cmd: list[str], cwd: Path, api: str) -> subprocess.CompletedProcess[str]:
    env = stage_env({"PREFECT_API_URL": api, "PREFECT_HOME": str(cwd / ".prefect"), "RARE_PROJECT_DIR": str(cwd)})
    env.pop("RARE_DEBUG", None)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=500)


def _error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error:" in line]


@pytest.mark.slow
def test_a_bad_param_is_one_error_line_from_every_entry_point(tmp_path: Path, prefect_api: str):
    project = _project(tmp_path / "p", "huge")
    entry_points = {"pipeline": [sys.executable, "-m", "flows.pipeline"], "dvc": dvc_command("repro"),
                    "cli": [str(Path(sys.executable).parent / "rare"), "data", "data/raw"]}
    exit_codes = {"pipeline": 1, "dvc": 255, "cli": 1}  # DVC exits 255 for any failed stage (its own rule)
    for name, cmd in entry_points.items():
        proc = _run(cmd, project, prefect_api)
        lines = _error_lines(proc)
        assert proc.returncode == exit_codes[name], (name, proc.stdout, proc.stderr)
        assert len(lines) == 1 and "params.yaml:2: data.preset" in lines[0], (name, lines)
        assert "Traceback" not in proc.stdout + proc.stderr, name

    debug = _run([*entry_points["pipeline"], "--debug"], project, prefect_api)
    assert debug.returncode == 1 and "Traceback" in debug.stdout + debug.stderr


@pytest.mark.slow
def test_stage_flow_runs_are_subflows_of_the_pipeline_run(tmp_path: Path, prefect_api: str):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterParentFlowRunId

    project = _project(tmp_path / "p", "tiny")
    proc = _run([sys.executable, "-m", "flows.pipeline"], project, prefect_api)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert (project / "data/raw").is_dir()
    assert out.count("git add") == 1  # DVC's hint once per run, not once per stage
    assert "Flow run 'data' - Finished in state" not in out  # the stage's own state lines stay in its own log

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["rare-pipeline"])))
        [pipeline] = [run for run in runs if run.state.is_completed()]  # the module's other runs failed
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[pipeline.id])))
        assert [run.name for run in children] == ["data"]
        assert children[0].state.is_completed() and children[0].parent_task_run_id is not None
        assert client.read_task_run(children[0].parent_task_run_id).flow_run_id == pipeline.id
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[children[0].id])))
        assert any("embedded benchmark (tiny, seed 0)" in log.message for log in logs)  # the stage's own log
