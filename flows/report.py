"""Prefect flow of the report stage; the work is in ``rare.report.stage``."""

from rare import runtime

runtime.configure()

from pathlib import Path  # noqa: E402

from prefect import flow  # noqa: E402

from rare.config import load_section  # noqa: E402


@flow(name="report", log_prints=True)
def report_flow(evals: Path, out: Path, data: Path, corpus_enhanced: Path | None, queries_enhanced: Path | None,
                params_file: Path = Path("params.yaml")) -> Path:
    """Build the ablation report from ``evals`` into ``out`` and log it on the pipeline's parent MLflow run."""
    from rare.report.stage import build_report, log_report

    params = load_section("report", params_file)
    report = build_report(Path(evals), Path(out), Path(data), params, corpus_enhanced, queries_enhanced)
    log_report(Path(out), load_section("tracking", params_file), Path(params_file))
    return report
