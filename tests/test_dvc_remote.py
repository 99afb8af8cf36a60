"""The documented local-remote workflow: repro, push, then pull into a fresh clone gives the same data."""

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from rare.repro import dvc_command, stage_env

REPO = Path(__file__).resolve().parents[1]


def sh(*cmd: str, cwd: Path) -> str:
    if cmd[0] == "dvc":
        cmd = tuple(dvc_command(*cmd[1:]))
    proc = subprocess.run(cmd, cwd=cwd, env=stage_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_push_then_pull_into_fresh_clone(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")  # the real stage definitions
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text().replace(
        "preset: default", "preset: tiny").replace("enabled: true", "enabled: false"))
    for src in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["data"]["deps"]:
        (project / src).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (REPO / src).is_dir() else shutil.copy)(REPO / src, project / src)
    sh("git", "init", "-q", cwd=project)
    sh("dvc", "init", "-q", cwd=project)
    sh("dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=project)
    sh("dvc", "repro", "data", cwd=project)
    sh("dvc", "push", cwd=project)
    sh("git", "add", "-A", cwd=project)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "data", cwd=project)

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    assert not (clone / "data/raw").exists()
    sh("dvc", "pull", "data", cwd=clone)
    original = digest(project / "data/raw")
    assert len(original) > 300 and digest(clone / "data/raw") == original
    assert "Data and pipelines are up to date" in sh("dvc", "status", "data", cwd=clone)
