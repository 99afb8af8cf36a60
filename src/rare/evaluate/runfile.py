"""TREC run files: ``qid Q0 did rank score run_id`` (UniIR adds a 7th column, task_id; both are read)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rare.atomic import replacing
from rare.data.input_error import DataError
from rare.data.lines import int_field, iter_lines


def write_run(path: str | Path, qids: Sequence[str], dids: np.ndarray, scores: np.ndarray, run_id: str) -> int:
    """Write one line per (query, retrieved candidate), rank 1 first; atomic (temp + rename). Returns lines."""
    path = Path(path)
    if " " in run_id or not run_id:
        raise ValueError(f"run_id {run_id!r} must be a non-empty word")
    lines = 0
    with replacing(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for qid, row_dids, row_scores in zip(qids, dids, scores, strict=True):
            fh.writelines(
                f"{qid} Q0 {did} {rank} {score:.9g} {run_id}\n"
                for rank, (did, score) in enumerate(zip(row_dids, row_scores.tolist()), start=1)
            )
            lines += len(row_dids)
    return lines


def read_run(path: str | Path) -> dict[str, list[str]]:
    """qid -> dids in rank order. Bad lines, duplicate ranks and duplicate dids per query are errors."""
    path = Path(path)
    ranked: dict[str, dict[int, str]] = {}
    seen: dict[str, set[str]] = {}
    for lineno, text in iter_lines(path):
        parts = text.split()
        if len(parts) not in (6, 7):
            raise DataError(path, lineno, f"expected 'qid Q0 did rank score run_id [task_id]', got {len(parts)} columns")
        qid, _, did, rank_s, score_s = parts[:5]
        rank = int_field(rank_s)
        if rank is None or rank < 1:
            raise DataError(path, lineno, f"rank {rank_s!r} must be an integer >= 1")
        try:
            score = float(score_s)
        except ValueError:
            raise DataError(path, lineno, f"score {score_s!r} is not a number") from None
        if math.isnan(score):
            raise DataError(path, lineno, "score is NaN")
        by_rank = ranked.setdefault(qid, {})
        if rank in by_rank:
            raise DataError(path, lineno, f"query {qid} has rank {rank} twice")
        dids = seen.setdefault(qid, set())
        if did in dids:
            raise DataError(path, lineno, f"query {qid} retrieves {did} twice")
        by_rank[rank] = did
        dids.add(did)
    return {qid: [by_rank[r] for r in sorted(by_rank)] for qid, by_rank in ranked.items()}
