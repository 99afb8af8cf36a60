"""The enhance stages as users run them: `rare enhance ...` -> Prefect flow -> engine -> MLflow."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rare.cli import app
from rare.enhance.engine import FAILURES_FILE, SUMMARY_FILE
from tests.fixtures.enhance import write_params


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def tiny_params(tmp_path, tiny_vlm, tracking=True, **enhance):  # noqa: F811
    return write_params(tmp_path / "params.yaml", tmp_path / "cache", tmp_path / "mlruns" if tracking else None,
                        backend="transformers",
                        model=str(tiny_vlm), max_new_tokens={"corpus": 4, "query": 4}, shard_size=8,
                        transformers={"device": "cpu"}, **enhance)


@pytest.mark.slow
def test_flow_maps_shards_writes_outputs_and_logs_to_mlflow(prefect_harness, tiny_root, tiny_vlm, tmp_path):  # noqa: F811
    from mlflow.tracking import MlflowClient

    from rare import stageflow, stages

    params = tiny_params(tmp_path, tiny_vlm, max_failure_rate=1.0)
    summary = stageflow.run_step(stages.ENHANCE, "enhance-corpus", side="corpus", data=tiny_root, out=tmp_path / "out",
                            params_file=params, metrics=tmp_path / "metrics/corpus.json")
    assert summary == json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert json.loads((tmp_path / "metrics/corpus.json").read_text()) == {"failure_rate": summary["failure_rate"]}
    runtime = json.loads((tmp_path / "metrics/runtime/corpus.json").read_text())
    assert runtime["items"] == summary["items"] and runtime["runtime"]["items_per_s"] > 0
    assert summary["items"] == 177 and summary["backend"] == "transformers"
    assert (tmp_path / "out/cand_pool/global/mbeir_union_test_cand_pool.jsonl").is_file()

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (exp,) = [e for e in client.search_experiments() if e.name == "rare-test"]
    (run,) = client.search_runs([exp.experiment_id], "tags.`rare.stage` = 'enhance'")
    assert run.info.run_name == "enhance-corpus" and run.data.tags["mlflow.parentRunId"]
    m = run.data.metrics
    assert m["items"] == 177 and m["ok"] + m["failed"] == summary["enhanceable"] and m["items_per_s"] > 0
    assert m["generated"] > 0 and m["gen_tokens_in"] > 0 and "cache_hits" in m
    assert run.data.params["backend"] == "transformers" and run.data.params["prompt_version"] == "v1"
    assert run.info.status == "FINISHED" and run.data.tags["rare.data_digest"]
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "samples.json")).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert {row["op"] for row in rows} == set(summary["by_op"]) - {"none"}
    assert all(row["after"] if row["status"] == "ok" else row["cause"] for row in rows)
    assert any(row["before"] for row in rows if row["op"] == "refine")  # refine keeps the passage it refines
    failures = json.loads(Path(client.download_artifacts(run.info.run_id, "failures.json")).read_text())
    assert len(failures["data"]) == summary["failed"]

    from prefect.artifacts import Artifact

    table = Artifact.get("enhance-corpus-failures")
    assert table is not None and table.type == "table"


@pytest.mark.slow
def test_cli_fails_loudly_with_the_failure_report_written(prefect_harness, tiny_root, tiny_vlm, tmp_path):  # noqa: F811
    (tiny_root / "mbeir_images/oven_images/q52.png").write_bytes(b"truncated")  # a question image no VLM can read
    params = tiny_params(tmp_path, tiny_vlm, tracking=False, max_failure_rate=0.0)
    result = CliRunner().invoke(app, ["enhance", "queries", "--data", str(tiny_root), "--out", str(tmp_path / "out"),
                                      "--params", str(params)])
    assert result.exit_code == 1, result.output
    failed = tmp_path / "out.failed"  # the report sits beside the output, which a failed run does not write
    assert "error:" in result.output and "items failed" in result.output and str(failed / FAILURES_FILE) in result.output
    assert not (tmp_path / "out").exists()
    report = [json.loads(line) for line in (failed / FAILURES_FILE).read_text().splitlines()]
    unreadable = [r for r in report if r["cause"].startswith("image_unreadable")]
    assert [(r["file"], r["id"], r["op"]) for r in unreadable] == [("query/test/mbeir_oven_task6_test.jsonl", "5:52", "resolve")]
    assert json.loads((failed / SUMMARY_FILE).read_text())["failed"] == len(report)


def test_only_transient_shard_failures_are_retried():
    from prefect.states import Failed

    from rare.data.input_error import DataError
    from rare.stageflow import transient

    assert transient(None, None, Failed(data=RuntimeError("CUDA out of memory"))) is True
    assert transient(None, None, Failed(data=DataError("pool.jsonl", 3, "malformed JSON"))) is False
    assert transient(None, None, Failed(data=ValueError("backend reports fake/x, expected fake/y"))) is False


@pytest.mark.slow
def test_cli_reports_bad_input_and_bad_params_in_one_line(prefect_harness, tmp_path):
    missing = CliRunner().invoke(app, ["enhance", "corpus", "--data", str(tmp_path / "nowhere"), "--out",
                                       str(tmp_path / "out"), "--params", str(write_params(tmp_path / "p.yaml",
                                                                                         tmp_path / "cache"))])
    assert missing.exit_code == 1 and "nowhere' does not exist" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("enhance:\n  backend: gpt\n")
    result = CliRunner().invoke(app, ["enhance", "queries", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                                      "--params", str(bad)])
    assert result.exit_code == 1 and "enhance.backend" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
