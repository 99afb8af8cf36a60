"""What `rare report` runs: the report (``rare.report.stage``), logged as the MLflow run ``report`` and on
the pipeline's parent run, and as a markdown artifact of the stage's flow run."""

from __future__ import annotations

from pathlib import Path

from rare import stageflow
from rare.config import load_section


def run(evals: Path, out: Path, data: Path, params_file: Path, corpus_enhanced: Path | None = None,
        queries_enhanced: Path | None = None, order: tuple[str, ...] = ()) -> Path:
    from rare.report.stage import build_report, log_report, markdown_summary
    from rare.tracking import deferred_child_run

    tracking = load_section("tracking", params_file)
    with deferred_child_run(tracking, "report", "report", data=data) as run_id:
        report = build_report(Path(evals), Path(out), Path(data), load_section("report", params_file),
                              corpus_enhanced, queries_enhanced, order)
        if run_id():
            log_report(Path(out), tracking, Path(params_file), run_id())
    if stageflow.in_run():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key="rare-report", markdown=markdown_summary(Path(out)),
                                 description="Scores and the paper's findings")
    return report
