"""`rare data OUT` as users run it: Prefect flow, atomic replacement of OUT, MLflow child run, clear errors."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rare.cli import app
from rare.validate import validate_root
from tests.fixtures.benchmark import tree_bytes as files


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write_params(path: Path, data: str, mlruns: Path | None = None) -> Path:
    tracking = (f"tracking:\n  experiment: rare-test\n  tracking_uri: sqlite:///{mlruns}/mlflow.db\n"
                f"  artifact_root: {mlruns}/artifacts\n") if mlruns else "tracking:\n  enabled: false\n"
    path.write_text(f"data:\n{data}{tracking}")
    return path


@pytest.mark.slow
def test_cli_generates_replaces_atomically_and_logs_to_mlflow(prefect_harness, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's setup creates ./mlruns
    params = write_params(tmp_path / "params.yaml", "  preset: tiny\n  seed: 4\n", tmp_path / "mlruns")
    out = tmp_path / "data" / "raw"
    stale = tmp_path / "data" / ".raw.tmp-99999"  # left behind by a killed run
    (stale / "query").mkdir(parents=True)
    out.mkdir(parents=True)
    (out / "old-file.txt").write_text("from an earlier run")

    result = CliRunner().invoke(app, ["data", str(out), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert validate_root(out).errors == [] and not (out / "old-file.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["raw"]  # no temp or old directories left
    first = files(out)
    assert CliRunner().invoke(app, ["data", str(out), "--params", str(params)]).exit_code == 0
    assert files(out) == first

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (exp,) = [e for e in client.search_experiments() if e.name == "rare-test"]
    runs = client.search_runs([exp.experiment_id], "tags.`rare.stage` = 'data'")
    assert len(runs) == 2 and runs[0].data.tags["mlflow.parentRunId"]
    assert runs[0].data.params["preset"] == "tiny" and runs[0].data.params["seed"] == "4"
    assert runs[0].data.metrics["images"] == len(list((out / "mbeir_images").rglob("*.png")))


@pytest.mark.slow
def test_mbeir_source_points_at_external_root_and_bad_params_fail_in_one_line(prefect_harness, tmp_path,
                                                                             tiny_root_session):
    from rare.data import MBEIRRoot

    missing = write_params(tmp_path / "a.yaml", "  source: mbeir\n  mbeir_root: /nonexistent/M-BEIR\n")
    result = CliRunner().invoke(app, ["data", str(tmp_path / "out"), "--params", str(missing)])
    assert result.exit_code == 1 and "error:" in result.output and "/nonexistent/M-BEIR is not a directory" in result.output

    real = write_params(tmp_path / "r.yaml", f"  source: mbeir\n  mbeir_root: {tiny_root_session}\n")
    result = CliRunner().invoke(app, ["data", str(tmp_path / "out"), "--params", str(real)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mbeir_root.json"]  # nothing copied
    root = MBEIRRoot.open(tmp_path / "out")
    assert root.path == tiny_root_session.resolve() and len(root.eval_tasks("test")) == 9

    bad = write_params(tmp_path / "b.yaml", "  preset: huge\n")
    result = CliRunner().invoke(app, ["data", str(tmp_path / "out2"), "--params", str(bad)])
    assert result.exit_code == 1 and "data.preset" in result.output
    assert not (tmp_path / "out2").exists()
