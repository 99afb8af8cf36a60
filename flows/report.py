"""Prefect flow of the report stage; the work is in ``rare.report.stage``."""

from rare import runtime

runtime.configure()

from pathlib import Path  # noqa: E402

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows import transient  # noqa: E402
from rare.config import load_section  # noqa: E402


@task(name="build-report", task_run_name="build-report", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2,
      retry_condition_fn=transient)
def build_task(evals: Path, out: Path, data: Path, corpus_enhanced: Path | None, queries_enhanced: Path | None,
               params_file: Path) -> Path:
    from rare.report.stage import build_report

    params = load_section("report", params_file)
    return build_report(Path(evals), Path(out), Path(data), params, corpus_enhanced, queries_enhanced)


@task(name="log-report-to-mlflow", task_run_name="log-report-to-mlflow", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=5, retry_condition_fn=transient)
def log_task(out: Path, params_file: Path, run_id: str) -> None:
    from rare.report.stage import log_report

    log_report(Path(out), load_section("tracking", params_file), Path(params_file), run_id)


@flow(name="report", flow_run_name="report", log_prints=True)
def report_flow(evals: Path, out: Path, data: Path, corpus_enhanced: Path | None, queries_enhanced: Path | None,
                params_file: Path = Path("params.yaml")) -> Path:
    """Build the ablation report from ``evals`` into ``out``; log it as the MLflow run ``report`` and on the
    pipeline's parent run, and as a markdown artifact of this flow run."""
    from prefect.artifacts import create_markdown_artifact

    from rare.report.stage import markdown_summary
    from rare.tracking import child_run

    with child_run(load_section("tracking", params_file), "report", "report", data=data, active=False) as run_id:
        report = build_task(evals, out, data, corpus_enhanced, queries_enhanced, params_file)
        if run_id:
            log_task(out, params_file, run_id)
    create_markdown_artifact(key="rare-report", markdown=markdown_summary(Path(out)),
                             description="Scores and the paper's findings")
    return report
