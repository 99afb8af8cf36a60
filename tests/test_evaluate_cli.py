"""`rare evaluate` and `rare report` as the pipeline runs them: Prefect flows, MLflow runs, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rare.cli import app
from tests.fixtures.evaluate import make_enhanced_mirrors
from tests.fixtures.models import make_tiny_retriever


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write_params(path: Path, cache: Path, mlruns: Path) -> Path:
    path.write_text(
        f"evaluate:\n  cache_dir: {cache}\n  top_k: 10\n"
        f"report:\n  gallery_queries: 2\n  gallery_compare: infer-both\n"
        f"tracking:\n  experiment: rare-test\n  tracking_uri: sqlite:///{mlruns}/mlflow.db\n"
        f"  artifact_root: {mlruns}/artifacts\n"
    )
    return path


@pytest.mark.slow
def test_evaluate_and_report_through_the_cli(prefect_harness, tiny_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's setup creates ./mlruns
    monkeypatch.delenv("RARE_PARENT_RUN_ID", raising=False)
    params = write_params(tmp_path / "params.yaml", tmp_path / "cache", tmp_path / "mlruns")
    model = make_tiny_retriever(tmp_path / "models/none")
    corpus, queries = make_enhanced_mirrors(tiny_root, tmp_path / "enhanced")
    common = ["--data", str(tiny_root), "--params", str(params)]
    for name, inputs in (("none", "none"), ("infer-both", "both")):
        result = CliRunner().invoke(app, ["evaluate", name, "--model", str(model), "--inputs", inputs,
                                          "--out", str(tmp_path / "evals" / name), "--corpus-enhanced", str(corpus),
                                          "--queries-enhanced", str(queries), *common])
        assert result.exit_code == 0, result.output
        assert f"{name}: M-BEIR score local" in result.output
    metrics = json.loads((tmp_path / "evals/none/metrics.json").read_text())
    assert set(metrics["local"]) == set(metrics["global"]) and len(metrics["local"]) == 9

    result = CliRunner().invoke(app, ["report", "--evals", str(tmp_path / "evals"), "--out", str(tmp_path / "report"),
                                      "--corpus-enhanced", str(corpus), "--queries-enhanced", str(queries), *common])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report/gallery.png").stat().st_size > 10_000

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("rare-test")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    infer, none = runs["eval-infer-both"], runs["eval-none"]
    assert infer.data.tags["rare.regime"] == "inference-only"
    assert infer.data.tags["rare.variant"] == "both" and infer.data.tags["rare.model_variant"] == "none"
    assert none.data.tags["rare.regime"] == "trained" and none.info.status == "FINISHED"
    assert none.data.metrics["score/local"] == pytest.approx(metrics["score"]["local"])
    assert none.data.metrics["local/cirr_task7/R_at_5"] == pytest.approx(metrics["local"]["cirr_task7"]["R@5"])
    parent = infer.data.tags["mlflow.parentRunId"]
    assert none.data.tags["mlflow.parentRunId"] == parent == runs["report"].data.tags["mlflow.parentRunId"]
    for run_id in (parent, runs["report"].info.run_id):
        artifacts = {a.path for a in client.list_artifacts(run_id, "report")}
        assert "report/report.md" in artifacts and "report/gallery.png" in artifacts
    assert runs["report"].info.status == "FINISHED" and client.get_run(parent).info.status == "FINISHED"

    from prefect.artifacts import Artifact

    summary = Artifact.get("rare-report")
    assert "## Findings of the paper" in summary.data and "![" not in summary.data


@pytest.mark.slow
def test_cli_errors_are_one_clear_line(prefect_harness, tiny_root: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path / "params.yaml", tmp_path / "cache", tmp_path / "mlruns")
    model = make_tiny_retriever(tmp_path / "model")
    result = CliRunner().invoke(app, ["evaluate", "corpus", "--model", str(model), "--inputs", "corpus",
                                      "--data", str(tiny_root), "--out", str(tmp_path / "o"), "--params", str(params)])
    assert result.exit_code == 1
    assert "error:" in result.output and "needs enhanced data" in result.output
    result = CliRunner().invoke(app, ["evaluate", "none", "--model", str(tmp_path / "nope"), "--inputs", "none",
                                      "--data", str(tiny_root), "--out", str(tmp_path / "o"), "--params", str(params)])
    assert result.exit_code == 1 and "nope' does not exist" in result.output
    result = CliRunner().invoke(app, ["report", "--evals", str(tmp_path / "none"), "--out", str(tmp_path / "r"),
                                      "--data", str(tiny_root), "--params", str(params)])
    assert result.exit_code == 1 and "none' does not exist" in result.output
