"""The pipeline runner: DVC's stage order, one stage at a time, failures that carry their cause."""

import subprocess
import textwrap
from pathlib import Path

import pytest

from rare.repro import StageFailed, dvc_command, run_stage, stage_order


@pytest.fixture
def dvc_repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(dvc_command("init", "-q"), cwd=tmp_path, check=True)
    (tmp_path / "src.txt").write_text("hello\n")
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""
        stages:
          report:
            cmd: wc -c upper.txt > report.txt
            deps: [upper.txt]
            outs: [report.txt]
          upper:
            cmd: tr a-z A-Z < src.txt > upper.txt
            deps: [src.txt]
            outs: [upper.txt]
          broken:
            cmd: echo "cause of the failure" && exit 3
            deps: [upper.txt]
    """))
    return tmp_path


def test_order_follows_dependencies_not_file_order(dvc_repo):
    order = stage_order(dvc_repo)
    assert order.index("upper") < order.index("report")
    assert order.index("upper") < order.index("broken")
    assert sorted(order) == ["broken", "report", "upper"]


def test_run_stage_runs_then_skips_when_unchanged(dvc_repo):
    lines: list[str] = []
    run_stage("upper", repo_dir=dvc_repo, echo=lines.append)
    assert (dvc_repo / "upper.txt").read_text() == "HELLO\n"
    assert any("Running stage 'upper'" in line for line in lines)
    lines.clear()
    run_stage("upper", repo_dir=dvc_repo, echo=lines.append)
    assert any("didn't change, skipping" in line for line in lines)


def test_failure_carries_exit_code_and_output(dvc_repo):
    run_stage("upper", repo_dir=dvc_repo, echo=lambda _: None)
    with pytest.raises(StageFailed) as exc:
        run_stage("broken", repo_dir=dvc_repo, echo=lambda _: None)
    assert "stage 'broken' failed" in str(exc.value)
    assert "cause of the failure" in str(exc.value)
    assert exc.value.command_exit == 3 and exc.value.retryable  # not rare's "bad input" exit code


def test_bad_input_exit_is_not_retried(dvc_repo):
    (dvc_repo / "dvc.yaml").write_text('stages:\n  bad:\n    cmd: "echo data.jsonl:3: malformed JSON && exit 1"\n')
    with pytest.raises(StageFailed) as exc:
        run_stage("bad", repo_dir=dvc_repo, echo=lambda _: None)
    assert exc.value.command_exit == 1 and not exc.value.retryable
    assert "data.jsonl:3: malformed JSON" in str(exc.value)


class Raised:
    """A finished task state whose result() raises, as Prefect hands it to a retry condition."""

    def __init__(self, exc: Exception):
        self.exc = exc

    def result(self):
        raise self.exc


def test_retry_condition_follows_the_cause():
    from rare.stageflow import transient

    bad_input = StageFailed("data", 1, "ERROR: failed to run: rare data data/raw, exited with 1")
    killed = StageFailed("train_none", 1, "ERROR: failed to run: rare train none, exited with -9")
    assert not transient(None, None, Raised(bad_input))
    assert transient(None, None, Raised(killed))
    assert not transient(None, None, Raised(ValueError("params.yaml: train.lr: must be > 0")))
    assert transient(None, None, Raised(OSError("database is locked")))
