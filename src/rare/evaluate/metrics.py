"""M-BEIR's "Recall@k", which is a hit rate: a query scores 1 if ANY of its positives is in the top k.

The denominator is every query of the qrels, so a query missing from a run counts as a miss, and
a positive that cannot be reached (a cross-dataset did in a local pool) is simply never found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rare.data.errors import DataError
from rare.data.qrels import read_qrels
from rare.evaluate.runfile import read_run
from rare.mbeir import DatasetTask


def metric_name(k: int) -> str:
    return f"R@{k}"


def first_hit_ranks(run: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]]) -> np.ndarray:
    """0-based rank of each qrels query's best-ranked positive; a large number when none is retrieved."""
    never = np.iinfo(np.int64).max
    ranks = np.full(len(qrels), never, dtype=np.int64)
    for i, (qid, positives) in enumerate(qrels.items()):
        for rank, did in enumerate(run.get(qid, ())):
            if did in positives:
                ranks[i] = rank
                break
    return ranks


def hit_rates(run: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]], ks: Iterable[int]) -> dict[int, float]:
    """Hit rate x100 at each k, over the queries of ``qrels``."""
    if not qrels:
        raise ValueError("no queries in the qrels: nothing to score")
    ranks = first_hit_ranks(run, qrels)
    return {k: float((ranks < k).mean() * 100.0) for k in ks}


def task_metrics(run: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]], dt: DatasetTask) -> dict[str, float]:
    """R@k at the dataset-task's three cutoffs, plus ``headline`` (R@5, or R@10 where M-BEIR reports it)."""
    rates = hit_rates(run, qrels, dt.ks)
    out = {metric_name(k): v for k, v in rates.items()}
    out["headline"] = rates[dt.headline_k]
    out["queries"] = float(len(qrels))
    return out


def mbeir_score(per_task: Mapping[str, Mapping[str, float]]) -> float:
    """The M-BEIR score: the unweighted mean of the headline numbers of the evaluated dataset-tasks."""
    if not per_task:
        raise ValueError("no dataset-task metrics to average")
    return float(np.mean([m["headline"] for m in per_task.values()]))


@dataclass(frozen=True)
class Scored:
    """What ``rare score`` prints: hit rate x100 at each k over the qrels' queries, their count, and
    the signs that the run and the qrels may not belong together."""

    rates: dict[int, float]
    queries: int
    warnings: list[str]


def score_run(run_file: str | Path, qrels_file: str | Path, ks: Iterable[int]) -> Scored:
    """An empty run or a cutoff below 1 is an error; a suspicious but valid pair is a warning."""
    ks = list(ks)
    bad = [k for k in ks if k < 1]
    if bad:
        raise ValueError(f"cutoff k must be >= 1, got {bad[0]}")
    run, qrels = read_run(run_file), read_qrels(qrels_file)
    if not run:
        raise DataError(run_file, None, "run file is empty: nothing to score")
    if not qrels:
        raise DataError(qrels_file, None, "qrels file lists no positives: nothing to score")
    warnings = []
    shared = run.keys() & qrels.keys()
    if not shared:
        warnings.append(f"{run_file}: no qid of the run is in {qrels_file}; is it the qrels of another split "
                        f"or dataset? (run e.g. {min(run)!r}, qrels e.g. {min(qrels)!r})")
    else:
        missing = sorted(qrels.keys() - run.keys())
        if missing:
            warnings.append(f"{run_file}: {len(missing)} of {len(qrels)} qrels queries are missing from the run "
                            f"(counted as misses), e.g. {missing[0]!r}")
        positives = set().union(*qrels.values())
        retrieved = {did for qid in shared for did in run[qid]}
        if not retrieved & positives:
            warnings.append(f"{run_file}: no retrieved did is a positive of any query in {qrels_file}; "
                            f"are the dids from another pool? (e.g. {min(retrieved)!r})")
    return Scored(hit_rates(run, qrels, ks), len(qrels), warnings)
