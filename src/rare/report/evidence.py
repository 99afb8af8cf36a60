"""Per-query evidence for the report: each evaluation's headline hit per test query, read back from its run
files and the qrels, grouped by row (an evaluation and its seed replicas ``<name>@s<seed>``), and the
intervals of every delta the report's tables show.

The run files, not metrics.json, are the source: the bootstrap needs per-query values, and reading them
again is a check that the table's numbers and the intervals describe the same retrievals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rare.data.input_error import DataError
from rare.data.layout import MBEIRRoot
from rare.data.qrels import read_qrels
from rare.evaluate.metrics import metric_name, per_query
from rare.evaluate.runfile import read_run
from rare.mbeir import DatasetTask
from rare.report.stats import Bootstrap, Contrast, Interval, Samples, mean_of
from rare.report.table import SCORE, Evaluation, columns

SEED_SUFFIX = re.compile(r"^(?P<row>.+)@s(?P<seed>\d+)$")


def row_of(name: str) -> tuple[str, int | None]:
    """``corpus@s2`` -> ("corpus", 2); a plain name is its own row (its seed is the params' train.seed)."""
    m = SEED_SUFFIX.match(name)
    return (m["row"], int(m["seed"])) if m else (name, None)


def split_seeds(evaluations: Sequence[Evaluation]) -> tuple[list[Evaluation], dict[str, list[Evaluation]]]:
    """The table's rows (one evaluation per row) and every row's replicas, the row's own evaluation first."""
    rows = [e for e in evaluations if row_of(e.name)[1] is None]
    replicas: dict[str, list[Evaluation]] = {e.name: [e] for e in rows}
    for e in sorted((e for e in evaluations if row_of(e.name)[1] is not None), key=lambda e: row_of(e.name)[1] or 0):
        row = row_of(e.name)[0]
        if row not in replicas:
            raise DataError(e.dir, None, f"seed replica of {row!r}, but there is no evaluation {row!r}")
        replicas[row].append(e)
    return rows, replicas


@dataclass(frozen=True)
class QueryValues:
    """One evaluation's headline hit (x100) per query of one dataset-task, in qrels order, and the ranks."""

    qids: list[str]
    hits: np.ndarray
    first_rank: np.ndarray  # 1-based rank of the best-ranked positive; 0 when none is in the run
    depth: int              # the longest ranking of the run (evaluate.top_k)


def query_values(e: Evaluation, root: MBEIRRoot, pool: str, dt_name: str,
                 qrels: dict[str, set[str]] | None = None) -> QueryValues:
    dt = DatasetTask.parse(dt_name)
    run_file = e.run_file(pool, dt_name)
    if not run_file.exists():
        raise DataError(run_file, None, f"missing run file of evaluation {e.name!r}: the intervals need every "
                        "evaluation's per-query ranking")
    qrels = read_qrels(root.qrels_file(e.info.split, dt)) if qrels is None else qrels
    run = read_run(run_file)
    hits = per_query(run, qrels, [dt.headline_k])[metric_name(dt.headline_k)]
    first = np.zeros(len(qrels), dtype=np.int64)
    for i, (qid, pos) in enumerate(qrels.items()):
        first[i] = next((r for r, did in enumerate(run.get(qid, ()), start=1) if did in pos), 0)
    return QueryValues(list(qrels), hits, first, max((len(r) for r in run.values()), default=0))


def load_samples(replicas: dict[str, list[Evaluation]], data: Path, pool: str,
                 keep: dict[tuple[str, str], QueryValues] | None = None) -> Samples:
    """Every row's per-query headline hits on ``pool``, its seeds stacked; ``keep`` collects each row's own
    (first) evaluation's values per (row, dataset-task), for the audit."""
    root = MBEIRRoot.open(data)
    samples = Samples()
    qrels: dict[tuple[str, str], dict[str, set[str]]] = {}  # read once per (split, dataset-task)
    for row, evals in replicas.items():
        if pool not in evals[0].metrics:
            continue
        for dt in evals[0].info.dataset_tasks:
            key = (evals[0].info.split, dt)
            if key not in qrels:
                qrels[key] = read_qrels(root.qrels_file(key[0], DatasetTask.parse(dt)))
            per_seed = [query_values(e, root, pool, dt, qrels[key]) for e in evals]
            samples.add(row, dt, np.stack([v.hits for v in per_seed]))
            if keep is not None:
                keep[(row, dt)] = per_seed[0]
    return samples


def quantities(evaluations: Sequence[Evaluation]) -> dict[str, list[str]]:
    """Every column of the table as the dataset-tasks it averages: each dataset-task, each group, the score."""
    groups = columns(evaluations)
    out: dict[str, list[str]] = {}
    for probe, dts in groups.items():
        out |= {dt: [dt] for dt in dts}
        out[probe.value] = list(dts)
    out[SCORE] = [dt for dts in groups.values() for dt in dts]
    return out


def delta_intervals(rows: Sequence[Evaluation], base: Evaluation, boot: Bootstrap) -> dict[str, dict[str, Interval]]:
    """row -> column -> interval of (row - baseline), every column of the table; paired: one set of draws."""
    cols = quantities(rows)
    out: dict[str, dict[str, Interval]] = {}
    for e in rows:
        if e is base or e.name not in boot.samples.values:
            continue
        out[e.name] = {col: boot.interval(Contrast(e.name, base.name, mean_of(dts))) for col, dts in cols.items()}
    return out

