"""The ablation table: every evaluation's headline numbers, grouped by what each dataset probes.

Rows are evaluations (the zero-shot pretrained model, trained variants, then inference-only ones); columns are dataset-tasks grouped
by ``rare.mbeir.Probe`` with a mean per group and the M-BEIR score; cells show deltas against the baseline.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rare.contracts import EvalInfo, EvalMetrics
from rare.data.input_error import DataError
from rare.mbeir import DatasetTask, Probe
from rare.report.stats import Interval, seed_summary

PROBE_ORDER = (Probe.KNOWLEDGE, Probe.COMPOSITIONAL, Probe.PLAIN)
SCORE = "M-BEIR score"


@dataclass(frozen=True)
class Evaluation:
    """One ``<evals>/<name>/``: its metrics.json, info.json and run files."""

    name: str
    dir: Path
    metrics: EvalMetrics
    info: EvalInfo

    @property
    def inputs(self) -> str:
        return self.info.inputs

    @property
    def regime(self) -> str:
        return self.info.regime

    def pools(self) -> list[str]:
        return [p for p in ("local", "global") if p in self.metrics]

    def headline(self, pool: str, dt: str) -> float | None:
        m = self.metrics.get(pool, {}).get(dt)
        return None if m is None else float(m["headline"])

    def run_file(self, pool: str, dt: str) -> Path:
        return self.dir / "runs" / pool / f"{dt}.trec"


def load_evaluations(evals: Path, order: Sequence[str] = ()) -> list[Evaluation]:
    """Every evaluation under ``evals``, in the row order ``order`` names (the pipeline's declaration hands
    it over: zero-shot, the variants, then the inference-only rows); others last, by name."""
    found = []
    for metrics_file in sorted(Path(evals).glob("*/metrics.json")):
        d = metrics_file.parent
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            info = EvalInfo.read(d / "info.json")
        except FileNotFoundError as exc:
            raise DataError(d, None, f"incomplete evaluation ({exc.filename} is missing)") from None
        except json.JSONDecodeError as exc:
            raise DataError(d, None, f"unreadable evaluation output ({exc})") from None
        found.append(Evaluation(d.name, d, metrics, info))
    if not found:
        raise DataError(evals, None, "no evaluations found (expected <evals>/<name>/metrics.json)")
    rank = {n: i for i, n in enumerate(order)}
    return sorted(found, key=lambda e: (rank.get(e.name, len(rank)), e.name))


def seed_mean(replicas: Sequence[Evaluation]) -> Evaluation:
    """One row of the table from a row's seed replicas (its own evaluation first): every metric of every
    dataset-task and the score, averaged across the seeds that have it. The deltas and their intervals are
    seed means (``Samples.point``), so the cells beside them must be too. Run files stay the first seed's:
    the gallery and the audit show one model's rankings."""
    first = replicas[0]
    if len(replicas) == 1:
        return first
    metrics: dict = {"score": {}}
    for pool in first.pools():
        cells: dict[str, dict[str, float]] = {}
        for dt in first.metrics[pool]:
            per_seed = [e.metrics[pool][dt] for e in replicas if dt in e.metrics.get(pool, {})]
            cells[dt] = {m: float(np.mean([c[m] for c in per_seed if m in c])) for m in per_seed[0]}
        metrics[pool] = cells
        if pool in first.metrics.get("score", {}):
            metrics["score"][pool] = float(np.mean([e.metrics["score"][pool] for e in replicas
                                                    if pool in e.metrics.get("score", {})]))
    return Evaluation(first.name, first.dir, metrics, first.info)  # type: ignore[arg-type]


def seed_table(replicas: Mapping[str, Sequence[Evaluation]], pools: Sequence[str]) -> list[str]:
    """Mean ± sd across seeds of every group mean and the M-BEIR score, for rows with several seeds: the
    means are the cells of the pool tables, the sds what those cells do not show."""
    studied = {row: evals for row, evals in replicas.items() if len(evals) > 1}
    if not studied:
        return []
    groups = columns([e for evals in replicas.values() for e in evals])
    heads = [f"{pool} {label}" for pool in pools for label in [k.value for k in groups] + [SCORE]]
    lines = ["| evaluation | seeds | " + " | ".join(heads) + " |", "|---|---:|" + "---:|" * len(heads)]
    for row, evals in studied.items():
        cells = []
        for pool in pools:
            per_col = [[group_mean(e, pool, dts) for e in evals] for dts in groups.values()]
            per_col.append([e.metrics.get("score", {}).get(pool) for e in evals])
            for values in per_col:
                known = [v for v in values if v is not None]
                cells.append("–" if not known else "{:.1f} ± {:.1f}".format(*seed_summary(known)))
        lines.append(f"| {row} | {len(evals)} | " + " | ".join(cells) + " |")
    return lines


def find_baseline(evaluations: Sequence[Evaluation]) -> Evaluation | None:
    """The model trained and evaluated on original inputs."""
    return next((e for e in evaluations if e.inputs == "none" and e.regime == "trained"), None)


def probe_of(dt: str) -> Probe:
    return DatasetTask.parse(dt).info.probe


def columns(evaluations: Sequence[Evaluation]) -> dict[Probe, list[str]]:
    """Dataset-tasks grouped by what they probe, in the order the evaluations list them; empty groups dropped."""
    seen: list[str] = []
    for e in evaluations:
        seen += [dt for dt in e.info.dataset_tasks if dt not in seen]
    groups = {k: [dt for dt in seen if probe_of(dt) == k] for k in PROBE_ORDER}
    return {k: dts for k, dts in groups.items() if dts}


def group_mean(e: Evaluation, pool: str, dts: Sequence[str]) -> float | None:
    values = [e.headline(pool, dt) for dt in dts]
    return None if any(v is None for v in values) else float(np.mean(values))


def summary(evaluations: Sequence[Evaluation], pool: str) -> dict[str, dict[str, float | None]]:
    """evaluation -> {probe group label: mean headline, SCORE: M-BEIR score} for one pool."""
    groups = columns(evaluations)
    out = {}
    for e in evaluations:
        row: dict[str, float | None] = {k.value: group_mean(e, pool, dts) for k, dts in groups.items()}
        row[SCORE] = e.metrics.get("score", {}).get(pool)
        out[e.name] = row
    return out


def _cell(value: float | None, base: float | None, is_base: bool, interval: Interval | None = None) -> str:
    if value is None:
        return "–"
    if is_base or base is None:
        return f"{value:.1f}"
    if interval is not None:
        return f"{value:.1f} ({interval.text()})"
    return f"{value:.1f} ({value - base:+.1f})"


def markdown_table(evaluations: Sequence[Evaluation], pool: str,
                   intervals: Mapping[str, Mapping[str, Interval]] | None = None) -> str:
    """One markdown table for one pool; deltas are against the baseline row, with their 95% interval
    (``intervals``: row -> column -> interval, as ``rare.report.evidence.delta_intervals`` gives them)."""
    intervals = intervals or {}
    groups = columns(evaluations)
    base = find_baseline(evaluations)
    header = ["evaluation", "regime"]
    for probe, dts in groups.items():
        header += dts + [f"**{probe.value} mean**"]
    header.append(f"**{SCORE}**")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    for e in evaluations:
        if pool not in e.metrics:
            continue
        is_base = e is base
        cells = [f"**{e.name}**" if is_base else e.name, e.regime]
        ivs = intervals.get(e.name, {})
        for probe, dts in groups.items():
            for dt in dts:
                cells.append(_cell(e.headline(pool, dt), base and base.headline(pool, dt), is_base, ivs.get(dt)))
            cells.append(_cell(group_mean(e, pool, dts), base and group_mean(base, pool, dts), is_base,
                               ivs.get(probe.value)))
        score = e.metrics["score"].get(pool)
        cells.append(_cell(score, base and base.metrics["score"].get(pool), is_base, ivs.get(SCORE)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_column(group: str) -> str:
    """Plain column names for DVC plot definitions: "knowledge-intensive" -> knowledge_intensive, score."""
    return "score" if group == SCORE else group.replace("-", "_")


def scores_csv(evaluations: Sequence[Evaluation], pool: str) -> str:
    """The bar chart's data for one pool (a DVC plot): one row per evaluation, one column per group."""
    rows = summary(evaluations, pool)
    groups = [k.value for k in columns(evaluations)] + [SCORE]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["evaluation", "regime", *(csv_column(g) for g in groups)])
    for e in evaluations:
        if pool in e.metrics:
            writer.writerow([e.name, e.regime, *("" if rows[e.name][g] is None else f"{rows[e.name][g]:.4f}"
                                               for g in groups)])
    return buf.getvalue()
