"""M-BEIR's "Recall@k", which is a hit rate: a query scores 1 if ANY of its positives is in the top k.

The denominator is every query of the qrels, so a query missing from a run counts as a miss, and
a positive that cannot be reached (a cross-dataset did in a local pool) is simply never found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

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


def score_run(run_file: str | Path, qrels_file: str | Path, ks: Iterable[int]) -> tuple[dict[int, float], int]:
    """What ``rare score`` prints: hit rate x100 at each k over the qrels' queries, and their count."""
    qrels = read_qrels(qrels_file)
    return hit_rates(read_run(run_file), qrels, ks), len(qrels)
