"""The ``report`` stage: its declaration, the ``rare report`` command, and its tracking: the MLflow run
``report`` (and the pipeline's parent run) and a markdown artifact of the stage's flow run, around
``rare.report.compose.build_report``. The row order and the variants' sides are handed to the report from
the declarations here, so the report's code does not read them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rare.stages.command import CorpusEnhOpt, DataOpt, InDir, ParamsOpt, QueriesEnhOpt, run_stage
from rare.stages.declare import RAW, Out, Stage, Step, bar, enhanced_inputs
from rare.stages.variants import EVALUATIONS, VARIANTS

if TYPE_CHECKING:
    from rare.config.tracking import TrackingParams

REPORT = Step("report", "rare.stages.report:run_report", ("report",))


def declared() -> Iterator[Stage]:
    yield Stage("report", REPORT, inputs={"--data": RAW, **enhanced_inputs("both")},
                options={"--evals": "eval", "--out": "report", "--order": ",".join(EVALUATIONS)},
                needs=tuple(f"eval/{e}" for e in EVALUATIONS),
                outs=(Out("report/report.md"), Out("report/summary.json"), Out("report/intervals.json", cache=False),
                      Out("report/audit.parquet"),
                      Out("report/scores.png", kind="plots"), Out("report/gallery.png", kind="plots"),
                      Out("report/scores_local.csv", kind="plots", plot=bar("score", "evaluation")),
                      Out("report/scores_global.csv", kind="plots", plot=bar("score", "evaluation"))))


def run_report(evals: Path, out: Path, data: Path, params_file: Path, corpus_enhanced: Path | None = None,
               queries_enhanced: Path | None = None, order: tuple[str, ...] = (),
               sides: dict[str, tuple[bool, bool]] | None = None) -> Path:
    """The report into ``out``; ``sides``: each input variant's enhanced sides (default: the declared variants)."""
    from rare import stageflow
    from rare.config import load_section
    from rare.mlflow_runs import deferred_child_run
    from rare.report.compose import build_report, markdown_summary

    tracking = load_section("tracking", params_file)
    with deferred_child_run(tracking, "report", "report", data=data) as run_id:
        report = build_report(Path(evals), Path(out), Path(data), load_section("report", params_file),
                              corpus_enhanced, queries_enhanced, order, sides if sides is not None else {v: x.sides for v, x in VARIANTS.items()})
        if run_id():
            log_report(Path(out), tracking, Path(params_file), run_id())
    if stageflow.in_run():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key="rare-report", markdown=markdown_summary(Path(out)),
                                 description="Scores and the paper's findings")
    return report


def log_report(out: Path, tracking: TrackingParams, params_file: Path, run_id: str | None = None) -> str | None:
    """Attach the report, with every evaluation's score as a metric, to the stage's own run ``run_id`` and
    to the pipeline's parent run (where pipeline runs are compared). Returns the parent's id."""
    if not tracking.enabled:
        return None
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from rare.mlflow_runs import parent_run_id

    parent = parent_run_id(tracking, params_file)
    client = MlflowClient()
    scores = json.loads((out / "summary.json").read_text(encoding="utf-8"))["scores"]
    intervals = json.loads((out / "intervals.json").read_text(encoding="utf-8"))
    for target in dict.fromkeys([run_id, parent]):
        if target is None:
            continue
        client.log_artifacts(target, str(out), artifact_path="report")
        audit = out / "audit.parquet"
        if audit.exists():
            import pyarrow.parquet as pq

            client.log_table(target, pq.read_table(audit).to_pandas(), artifact_file="report/audit_table.json")
        for pool, rows in scores.items():
            for name, row in rows.items():
                for group, value in row.items():
                    if value is not None:
                        client.log_metric(target, f"report/{name}/{pool}/{group.replace(' ', '_')}", value)
        now = int(time.time() * 1000)
        client.log_batch(target, metrics=[
            Metric(f"report_ci/{name}/{pool}/{col.replace(' ', '_')}/{end}", iv[end], now, 0)
            for pool, rows in intervals["deltas"].items() for name, cols in rows.items()
            for col, iv in cols.items() for end in ("estimate", "lo", "hi")])
    return parent


def report(
    evals: Annotated[Path, typer.Option("--evals", help="Directory of evaluations (<evals>/<name>/metrics.json).",
                                        **InDir)],
    out: Annotated[Path, typer.Option("--out", help="Report directory.")],
    data: DataOpt,
    corpus_enhanced: CorpusEnhOpt = None,
    queries_enhanced: QueriesEnhOpt = None,
    order: Annotated[str, typer.Option("--order", help="The table's rows: evaluation names, comma-separated "
                                       "(others follow by name).")] = ",".join(EVALUATIONS),
    params_file: ParamsOpt = Path("params.yaml"),
) -> None:
    """Ablation table, bar chart, qualitative gallery and the paper's findings, logged to the parent MLflow run."""
    path = run_stage(REPORT, "report", evals=evals, out=out, data=data, params_file=params_file,
                     corpus_enhanced=corpus_enhanced, queries_enhanced=queries_enhanced,
                     order=tuple(n for n in order.split(",") if n))
    typer.echo(f"report: {path}")


def mount(app: typer.Typer) -> None:
    app.command(REPORT.command)(report)
