"""The report stage: table, bar chart, gallery and findings from every evaluation, logged to the parent run."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from rare.atomic import atomic_write_text
from rare.config.report import ReportParams
from rare.data.layout import MBEIRRoot
from rare.report.audit import audit_table, largest_moves, write_audit
from rare.report.costs import cost_lines
from rare.report.evidence import QueryValues, delta_intervals, load_samples, split_seeds
from rare.report.findings import Finding, assess
from rare.report.stats import Bootstrap
from rare.report.table import (
    Evaluation,
    find_baseline,
    load_evaluations,
    markdown_table,
    scores_csv,
    seed_mean,
    seed_table,
    summary,
)

log = logging.getLogger(__name__)


def _headline_note(evals: list[Evaluation], level: str) -> str:
    ks = sorted({k for e in evals for k in e.info.headline.values()}, key=lambda m: int(m[2:]))
    r10 = sorted({dt for e in evals for dt, k in e.info.headline.items() if k == "R@10"})
    note = f"Cells are each dataset-task's headline metric ({', '.join(ks)})"
    note += f"; R@10 for {', '.join(r10)}" if r10 else ""
    return note + (f". Deltas in parentheses are against the baseline (bold row), with their {level} interval "
                   "[low, high]; an interval that contains 0 is no evidence of a difference.")


def _finding_lines(findings: list[Finding]) -> list[str]:
    lines = []
    for f in findings:
        lines.append(f"- **{f.verdict.upper()}**: {f.claim} {f.evidence}.")
        if f.net:
            lines.append("  Net effect: " + "; ".join(f"{label} {iv.text()}" for label, iv in f.net) + ".")
    return lines


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
                 queries_enhanced: Path | None = None, order: Sequence[str] = (),
                 sides: Mapping[str, tuple[bool, bool]] | None = None) -> Path:
    """Write report.md, scores.png, gallery.png, scores_<pool>.csv, intervals.json and summary.json under ``out``.

    ``order`` is the table's row order and ``sides`` each input variant's (enhanced corpus, enhanced queries),
    both handed in by the stage, which reads the declarations: the report's code never imports them."""
    from rare.report.chart import bar_chart  # matplotlib: imported when the work starts, not with the command
    from rare.report.gallery import gallery

    MBEIRRoot.open(data)  # registers the datasets an imported root declares (their probe groups the table)
    t0 = time.perf_counter()
    rows, replicas = split_seeds(load_evaluations(evals, order))
    evaluations = [seed_mean(replicas[e.name]) for e in rows]  # cells are seed means, as the deltas are
    pools = [p for p in ("local", "global") if any(p in e.metrics for e in evaluations)]
    base = find_baseline(evaluations)
    findings_pool = params.findings_pool if params.findings_pool in pools else pools[0]
    kept: dict[tuple[str, str], QueryValues] = {}
    boots = {pool: Bootstrap(load_samples(replicas, data, pool, kept if pool == findings_pool else None),
                             params.resamples, params.bootstrap_seed, params.level) for pool in pools}
    deltas = {pool: delta_intervals(evaluations, base, boots[pool]) if base else {} for pool in pools}
    findings = assess(evaluations, boots[findings_pool], params.permutations)
    stats_s = time.perf_counter() - t0
    audit_lines: list[str] = []
    if base is not None:
        table = audit_table(evaluations, base, kept, data, sides or {}, corpus_enhanced, queries_enhanced)
        write_audit(table, out / "audit.parquet")
        shown_row = params.gallery_compare if any(e.name == params.gallery_compare for e in evaluations) else None
        if shown_row:
            audit_lines = largest_moves(table, shown_row, params.audit_top)
    bar_chart(evaluations, out / "scores.png")
    for pool in pools:
        atomic_write_text(out / f"scores_{pool}.csv", scores_csv(evaluations, pool))
    other = next((e for e in evaluations if e.name == params.gallery_compare), None)
    shown = None
    if base is not None and other is not None:
        shown = gallery(base, other, data, out / "gallery.png", params.gallery_queries, params.gallery_top_k,
                        params.seed, corpus_enhanced, queries_enhanced)

    seeds = {row: len(evals) for row, evals in replicas.items()}
    level = f"{params.level * 100:g}%"
    listing = ", ".join(f"{e.name} ({e.regime}{f', {seeds[e.name]} seeds' if seeds[e.name] > 1 else ''})"
                        for e in evaluations)
    md = ["# Ablation report", "",
          f"Evaluations: {listing}. Baseline: {base.name if base else 'none found'}. "
          f"Split: {evaluations[0].info.split}.", "",
          "## Findings of the paper", "",
          f"Judged on the {findings_pool} pool by {level} intervals of the gains each claim needs: a paired "
          f"bootstrap over test queries stratified per dataset-task ({params.resamples} resamples, seed "
          f"{params.bootstrap_seed}; seeds resampled too where a variant has several) and a paired sign-flip "
          f"permutation test ({params.permutations} permutations). **Supported**: every needed gain's interval "
          "is above zero; **contradicted**: one is below zero; **inconclusive**: anything else.", ""]
    md += _finding_lines(findings)
    seed_lines = seed_table(replicas, pools)
    if seed_lines:
        md += ["", "## Seeds", "", "Rows trained with several seeds: each group mean and the M-BEIR score as mean ± sd "
               "across seeds. The tables' cells are these means, and their deltas and intervals use every seed's "
               "per-query values (seeds resampled as well as queries). The gallery and the audit show the first "
               "seed's rankings.", "", *seed_lines]
    md += _enhancement_note(corpus_enhanced, queries_enhanced)
    for pool in pools:
        md += ["", f"## {pool.capitalize()} pool", "", _headline_note(evaluations, level), "",
               markdown_table(evaluations, pool, deltas[pool])]
    if audit_lines:
        md += ["", "## Per-query audit", "",
               f"`audit.parquet` has, for every test query ({findings_pool} pool) and every evaluation, the original "
               f"and enhanced query, the first positive's rank under {base.name if base else 'the baseline'} and "
               f"under the row's model, and whether that positive's own text was enhanced. Largest moves of "
               f"'{params.gallery_compare}' per dataset-task (– = not in the run's top k):", "", *audit_lines]
    costs = cost_lines(Path(params.runtime_dir))
    if costs:
        md += ["", "## Enhancement costs", "",
               f"From the per-item records of the last `rare enhance` runs ({params.runtime_dir}): tokens as the "
               "backend counts them (server `usage`, the model's tokenizer, or the stand-in's whitespace words), "
               "items/s over generation time only. Each shard stores its records, so a shard reused from an earlier "
               "run reports them as recorded when generated.", "", *costs]
    md += ["", "## Figures", "", "![scores](scores.png)", ""]
    md.append("![gallery](gallery.png)" if shown else
              f"No gallery: it needs the baseline and the '{params.gallery_compare}' evaluation with local run files.")
    report = out / "report.md"
    atomic_write_text(report, "\n".join(md) + "\n")
    atomic_write_text(out / "intervals.json", json.dumps({
        "method": {"resamples": params.resamples, "permutations": params.permutations, "level": params.level,
                   "seed": params.bootstrap_seed, "baseline": base.name if base else None, "seeds": seeds},
        "deltas": {pool: {row: {col: iv.as_dict() for col, iv in cols.items()} for row, cols in rows.items()}
                   for pool, rows in deltas.items()},
        "findings_pool": findings_pool,
        "findings": [f.as_dict() for f in findings],
    }, indent=2) + "\n")
    atomic_write_text(out / "summary.json", json.dumps({
        "findings": [{"claim": f.claim, "verdict": f.verdict, "evidence": f.evidence} for f in findings],
        "scores": {pool: summary(evaluations, pool) for pool in pools},
        "evaluations": {e.name: {"regime": e.regime, "inputs": e.inputs, "model_variant": e.info.model_variant}
                        for e in evaluations},
    }, indent=2) + "\n")
    log.info("report: intervals and verdicts in %.1f s, report in %.1f s", stats_s, time.perf_counter() - t0)
    return report


def markdown_summary(out: Path) -> str:
    """report.md without its figures (their relative links only resolve beside the file): the tables and
    findings, for a Prefect markdown artifact."""
    text = (out / "report.md").read_text(encoding="utf-8")
    return text.split("\n## Figures", 1)[0].rstrip() + f"\n\nFigures: `{out / 'scores.png'}`, `{out / 'gallery.png'}`.\n"
