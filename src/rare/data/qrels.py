"""Qrels: ``qid 0 did 1 task_id``, one positive per line (space- or tab-separated)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from rare.data.input_error import DataError
from rare.data.lines import OnError, int_field, iter_lines

COLUMNS = "'qid 0 did 1 task_id'"


def iter_qrels(path: str | Path, on_error: OnError | None = None) -> Iterator[tuple[int, str, str, bool, int]]:
    """Yield (line, qid, did, relevant, task_id); a malformed line raises, or with ``on_error`` is skipped."""
    for lineno, text in iter_lines(path, on_error):
        try:
            yield (lineno, *_parse(text))
        except ValueError as exc:
            err = DataError(path, lineno, str(exc))
            if on_error is None:
                raise err from None
            on_error(err)


def _parse(text: str) -> tuple[str, str, bool, int]:
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"expected 5 space-separated columns {COLUMNS}, got {len(parts)}")
    qid, _, did, rel_s, task_s = parts
    rel, task = int_field(rel_s), int_field(task_s)
    if rel is None:
        raise ValueError(f"relevance {rel_s!r} is not a non-negative integer")
    if task is None:
        raise ValueError(f"task_id {task_s!r} is not an integer")
    return qid, did, rel > 0, task


def read_qrels(path: str | Path) -> dict[str, set[str]]:
    """qid -> positive dids. Cross-dataset positives are kept: they count in the global pool."""
    qrels: dict[str, set[str]] = defaultdict(set)
    for _, qid, did, relevant, _task in iter_qrels(path):
        if relevant:
            qrels[qid].add(did)
    return dict(qrels)


def qrels_line(qid: str, did: str, task_id: int) -> str:
    """One positive, in M-BEIR's 5-column form."""
    return f"{qid} 0 {did} 1 {task_id}\n"
