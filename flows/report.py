"""Prefect flow of the report stage; the work is in ``rare.report.stage``."""

from rare import runtime

runtime.configure()

from pathlib import Path  # noqa: E402

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows import transient  # noqa: E402
from rare.config import load_section  # noqa: E402


@task(name="build-report", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, retry_condition_fn=transient)
def build_task(evals: Path, out: Path, data: Path, corpus_enhanced: Path | None, queries_enhanced: Path | None,
               params_file: Path) -> Path:
    from rare.report.stage import build_report

    params = load_section("report", params_file)
    return build_report(Path(evals), Path(out), Path(data), params, corpus_enhanced, queries_enhanced)


@task(name="log-report-to-mlflow", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=transient)
def log_task(out: Path, params_file: Path) -> None:
    from rare.report.stage import log_report

    log_report(Path(out), load_section("tracking", params_file), Path(params_file))


@flow(name="report", log_prints=True)
def report_flow(evals: Path, out: Path, data: Path, corpus_enhanced: Path | None, queries_enhanced: Path | None,
                params_file: Path = Path("params.yaml")) -> Path:
    """Build the ablation report from ``evals`` into ``out`` and log it on the pipeline's parent MLflow run."""
    report = build_task(evals, out, data, corpus_enhanced, queries_enhanced, params_file)
    log_task(out, params_file)
    return report
