"""Qrels: ``qid 0 did 1 task_id``, one positive per line."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from rare.data.errors import DataError


def read_qrels(path: str | Path) -> dict[str, set[str]]:
    """qid -> positive dids. Cross-dataset positives are kept: they count in the global pool."""
    path = Path(path)
    qrels: dict[str, set[str]] = defaultdict(set)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise DataError(path, lineno, f"expected 5 space-separated columns 'qid 0 did 1 task_id', got {len(parts)}")
            qid, _, did, rel, task = parts
            if not task.isdigit():
                raise DataError(path, lineno, f"task_id {task!r} is not an integer")
            if rel != "0":
                qrels[qid].add(did)
    return dict(qrels)


def qrels_line(qid: str, did: str, task_id: int) -> str:
    return f"{qid} 0 {did} 1 {task_id}\n"
