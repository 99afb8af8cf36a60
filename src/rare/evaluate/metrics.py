"""M-BEIR's "Recall@k", which is a hit rate: a query scores 1 if ANY of its positives is in the top k,
and the rank metrics research users compare beside it: MRR@10, nDCG@10 (binary relevance) and true
recall@k (the fraction of a query's positives in the top k).

The denominator is every query of the qrels, so a query missing from a run counts as a miss, and
a positive that cannot be reached (a cross-dataset did in a local pool) is simply never found (it
still counts in recall's and nDCG's ideal). Every metric is first computed per query (``per_query``):
the report's bootstrap resamples those values, so its intervals and the table's numbers agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rare.data.input_error import DataError
from rare.data.qrels import read_qrels
from rare.evaluate.runfile import read_run
from rare.mbeir import DatasetTask

RANK_K = 10  # MRR and nDCG cutoff (VLM2Vec's and mteb's)
MRR, NDCG = f"MRR@{RANK_K}", f"nDCG@{RANK_K}"


def metric_name(k: int) -> str:
    return f"R@{k}"


def recall_name(k: int) -> str:
    """True recall; lower-case so it never reads as M-BEIR's hit-rate "R@k"."""
    return f"recall@{k}"


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


def positive_ranks(run: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]],
                   depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(queries, depth) bool matrix: is the did at each 0-based rank a positive; and each query's positive count."""
    hits = np.zeros((len(qrels), depth), dtype=bool)
    counts = np.zeros(len(qrels), dtype=np.int64)
    for i, (qid, positives) in enumerate(qrels.items()):
        counts[i] = len(positives)
        for rank, did in enumerate(run.get(qid, ())[:depth]):
            hits[i, rank] = did in positives
    return hits, counts


def per_query(run: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]], ks: Iterable[int]) -> dict[str, np.ndarray]:
    """Every metric x100 for each qrels query, in qrels order: R@k (hit), recall@k, MRR@10, nDCG@10."""
    ks = list(ks)
    depth = max([*ks, RANK_K])
    hits, counts = positive_ranks(run, qrels, depth)
    out: dict[str, np.ndarray] = {}
    cum = np.cumsum(hits, axis=1)
    for k in ks:
        out[metric_name(k)] = (cum[:, k - 1] > 0) * 100.0
    for k in ks:
        out[recall_name(k)] = cum[:, k - 1] / np.maximum(counts, 1) * 100.0
    top = hits[:, :RANK_K]
    first = np.where(top.any(axis=1), top.argmax(axis=1), -1)
    out[MRR] = 100.0 / np.where(first >= 0, first + 1, np.inf)
    discount = 1.0 / np.log2(np.arange(RANK_K) + 2.0)
    ideal = np.cumsum(discount)[np.minimum(counts, RANK_K) - 1]
    out[NDCG] = np.where(counts > 0, (top * discount).sum(axis=1) / np.where(counts > 0, ideal, 1.0), 0.0) * 100.0
    return out


def hit_rates(run: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]], ks: Iterable[int]) -> dict[int, float]:
    """Hit rate x100 at each k, over the queries of ``qrels``."""
    if not qrels:
        raise ValueError("no queries in the qrels: nothing to score")
    ranks = first_hit_ranks(run, qrels)
    return {k: float((ranks < k).mean() * 100.0) for k in ks}


def means(values: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {name: float(v.mean()) for name, v in values.items()}


def task_metrics(run: Mapping[str, Sequence[str]], qrels: Mapping[str, set[str]], dt: DatasetTask) -> dict[str, float]:
    """R@k and recall@k at the dataset-task's three cutoffs, MRR@10, nDCG@10, plus ``headline`` (R@5, or
    R@10 where M-BEIR reports it): the M-BEIR number, still the hit rate."""
    if not qrels:
        raise ValueError("no queries in the qrels: nothing to score")
    out = means(per_query(run, qrels, dt.ks))
    out["headline"] = out[metric_name(dt.headline_k)]
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
    more: dict[str, float]  # recall@k, MRR@10, nDCG@10


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
    values = means(per_query(run, qrels, ks))
    rates = {k: values.pop(metric_name(k)) for k in ks}
    return Scored(rates, len(qrels), warnings, values)
