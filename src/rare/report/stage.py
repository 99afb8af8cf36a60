"""The report stage: table, bar chart, gallery and findings from every evaluation, logged to the parent run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rare.atomic import atomic_write_text
from rare.config.report import ReportParams
from rare.config.tracking import TrackingParams
from rare.data.layout import MBEIRRoot
from rare.report.findings import assess
from rare.report.table import Evaluation, find_baseline, load_evaluations, markdown_table, scores_csv, summary

log = logging.getLogger(__name__)


def _headline_note(evals: list[Evaluation]) -> str:
    ks = sorted({k for e in evals for k in e.info.headline.values()}, key=lambda m: int(m[2:]))
    r10 = sorted({dt for e in evals for dt, k in e.info.headline.items() if k == "R@10"})
    note = f"Cells are each dataset-task's headline metric ({', '.join(ks)})"
    note += f"; R@10 for {', '.join(r10)}" if r10 else ""
    return note + ". Deltas in parentheses are against the baseline (bold row)."


def _first_causes(failures: Path) -> dict[str, str]:
    """Per failure category, the whole message of its first item (the summary counts categories only)."""
    first: dict[str, str] = {}
    if failures.is_file():
        with failures.open(encoding="utf-8") as fh:
            for line in fh:
                cause = json.loads(line).get("cause") or ""
                first.setdefault(cause.split(":", 1)[0], cause)
    return first


def _enhancement_note(corpus_enhanced: Path | None, queries_enhanced: Path | None) -> list[str]:
    """How many items each side's enhancement changed, and why the others were left as they were (a backend
    that cannot enhance this data, such as the stand-in on imported data, records every item with its cause)."""
    lines = []
    for side, folder in (("corpus", corpus_enhanced), ("queries", queries_enhanced)):
        path = folder / "enhance_summary.json" if folder else None
        if folder is None or path is None or not path.is_file():
            continue
        s = json.loads(path.read_text(encoding="utf-8"))
        first = _first_causes(folder / "enhance_failures.jsonl")
        causes = "; ".join(f"{n} x {first.get(cause, cause)}"
                           for cause, n in sorted(s["failures_by_cause"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- {side}: {s['ok']} of {s['enhanceable']} routed items enhanced by {s['backend']}/{s['model']}, "
                     f"{s['failed']} not enhanced{f' ({causes})' if causes else ''}; {s['skipped']} text-only left as is.")
    return ["", "## Enhancement", "", *lines] if lines else []


def build_report(evals: Path, out: Path, data: Path, params: ReportParams, corpus_enhanced: Path | None = None,
                 queries_enhanced: Path | None = None) -> Path:
    """Write report.md, scores.png, gallery.png, scores_<pool>.csv and summary.json under ``out``."""
    from rare.report.chart import bar_chart  # matplotlib: imported when the work starts, not with the command
    from rare.report.gallery import gallery

    MBEIRRoot.open(data)  # registers the datasets an imported root declares (their probe groups the table)
    evaluations = load_evaluations(evals)
    pools = [p for p in ("local", "global") if any(p in e.metrics for e in evaluations)]
    findings = assess(evaluations, params.findings_pool, params.min_gain)
    bar_chart(evaluations, out / "scores.png")
    for pool in pools:
        atomic_write_text(out / f"scores_{pool}.csv", scores_csv(evaluations, pool))
    base = find_baseline(evaluations)
    other = next((e for e in evaluations if e.name == params.gallery_compare), None)
    shown = None
    if base is not None and other is not None:
        shown = gallery(base, other, data, out / "gallery.png", params.gallery_queries, params.gallery_top_k,
                        params.seed, corpus_enhanced, queries_enhanced)

    listing = ", ".join(f"{e.name} ({e.regime})" for e in evaluations)
    md = ["# Ablation report", "",
          f"Evaluations: {listing}. Baseline: {base.name if base else 'none found'}. "
          f"Split: {evaluations[0].info.split}.", "",
          "## Findings of the paper", "",
          f"Judged on the {params.findings_pool} pool; a difference counts when it exceeds {params.min_gain:g} points.",
          ""]
    md += [f"- **{f.verdict.upper()}**: {f.claim} {f.evidence}." for f in findings]
    md += _enhancement_note(corpus_enhanced, queries_enhanced)
    for pool in pools:
        md += ["", f"## {pool.capitalize()} pool", "", _headline_note(evaluations), "",
               markdown_table(evaluations, pool)]
    md += ["", "## Figures", "", "![scores](scores.png)", ""]
    md.append("![gallery](gallery.png)" if shown else
              f"No gallery: it needs the baseline and the '{params.gallery_compare}' evaluation with local run files.")
    report = out / "report.md"
    atomic_write_text(report, "\n".join(md) + "\n")
    atomic_write_text(out / "summary.json", json.dumps({
        "findings": [vars(f) for f in findings],
        "scores": {pool: summary(evaluations, pool) for pool in pools},
        "evaluations": {e.name: {"regime": e.regime, "inputs": e.inputs, "model_variant": e.info.model_variant}
                        for e in evaluations},
    }, indent=2) + "\n")
    return report


def markdown_summary(out: Path) -> str:
    """report.md without its figures (their relative links only resolve beside the file): the tables and
    findings, for a Prefect markdown artifact."""
    text = (out / "report.md").read_text(encoding="utf-8")
    return text.split("\n## Figures", 1)[0].rstrip() + f"\n\nFigures: `{out / 'scores.png'}`, `{out / 'gallery.png'}`.\n"


def log_report(out: Path, tracking: TrackingParams, params_file: Path, run_id: str | None = None) -> str | None:
    """Attach the report, with every evaluation's score as a metric, to the stage's own run ``run_id`` and
    to the pipeline's parent run (where pipeline runs are compared). Returns the parent's id."""
    if not tracking.enabled:
        return None
    from mlflow.tracking import MlflowClient

    from rare import tracking as rare_tracking

    parent = rare_tracking.parent_run_id(tracking, params_file)
    client = MlflowClient()
    scores = json.loads((out / "summary.json").read_text(encoding="utf-8"))["scores"]
    for target in dict.fromkeys([run_id, parent]):
        if target is None:
            continue
        client.log_artifacts(target, str(out), artifact_path="report")
        for pool, rows in scores.items():
            for name, row in rows.items():
                for group, value in row.items():
                    if value is not None:
                        client.log_metric(target, f"report/{name}/{pool}/{group.replace(' ', '_')}", value)
    return parent
