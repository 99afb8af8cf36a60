"""The per-query audit: for each test query and each evaluation row, what the VLM changed in the query, where
the first positive ranked under the baseline and under the row's model, and whether the positive's own
text was enhanced. Written as ``audit.parquet``; the report lists each dataset-task's largest moves.

A rank is 1-based within the run's depth (``evaluate.top_k``); a positive not retrieved has no rank and
counts as depth + 1 in ``rank_change`` (baseline rank minus the row's: positive = the row ranks it higher).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rare.atomic import replacing
from rare.data.layout import MBEIRRoot
from rare.data.qrels import read_qrels
from rare.data.records import iter_candidates, iter_queries
from rare.data.views import side_file
from rare.mbeir import DatasetTask
from rare.report.evidence import QueryValues
from rare.report.table import Evaluation

SCHEMA = pa.schema([
    ("dataset_task", pa.string()), ("qid", pa.string()), ("evaluation", pa.string()), ("inputs", pa.string()),
    ("query_text", pa.string()), ("enhanced_query_text", pa.string()),
    ("rank_baseline", pa.int64()), ("rank", pa.int64()), ("rank_change", pa.int64()),
    ("positive_enhanced", pa.bool_()),
])


@dataclass(frozen=True)
class Texts:
    """Per query: the original text and the VLM's text ("" when not enhanced); positives with enhanced text."""

    query: dict[str, str]
    enhanced: dict[str, str]
    enhanced_positives: set[str]


def read_texts(root: MBEIRRoot, split: str, dt: DatasetTask, corpus_enhanced: Path | None,
               queries_enhanced: Path | None) -> Texts:
    qfile = side_file(root, queries_enhanced, root.query_file(split, dt.dataset, dt.task_id), queries_enhanced is not None)
    query, enhanced = {}, {}
    for q in iter_queries(qfile):
        query[q.qid] = q.txt
        enhanced[q.qid] = q.enhanced.txt or "" if q.enhanced is not None and q.enhanced.ok else ""
    positives = set().union(*read_qrels(root.qrels_file(split, dt)).values())
    ok: set[str] = set()
    if corpus_enhanced is not None:
        pool = side_file(root, corpus_enhanced, root.local_pool(dt, split), True)
        ok = {c.did for c in iter_candidates(pool)
              if c.did in positives and c.enhanced is not None and c.enhanced.ok}
    return Texts(query, enhanced, ok)


def audit_table(rows: Sequence[Evaluation], base: Evaluation, values: dict[tuple[str, str], QueryValues],
                data: Path, sides: Mapping[str, tuple[bool, bool]], corpus_enhanced: Path | None = None,
                queries_enhanced: Path | None = None) -> pa.Table:
    """One row per (dataset-task, query, evaluation other than the baseline); ``values`` from ``load_samples``;
    ``sides``: which sides each input variant enhances (an unknown one is an error, not a guess)."""
    root = MBEIRRoot.open(data)
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}
    for dt_name in base.info.dataset_tasks:
        dt = DatasetTask.parse(dt_name)
        texts = read_texts(root, base.info.split, dt, corpus_enhanced, queries_enhanced)
        qrels = read_qrels(root.qrels_file(base.info.split, dt))
        b = values[(base.name, dt_name)]
        for e in rows:
            if e is base or (e.name, dt_name) not in values:
                continue
            v = values[(e.name, dt_name)]
            depth = max(b.depth, v.depth)
            if e.inputs not in sides:
                raise ValueError(f"evaluation {e.name}: input variant {e.inputs!r} is not declared; known: {sorted(sides)}")
            use_corpus, use_query = sides[e.inputs]
            change = np.where(b.first_rank > 0, b.first_rank, depth + 1) - np.where(v.first_rank > 0, v.first_rank, depth + 1)
            for i, qid in enumerate(v.qids):
                cols["dataset_task"].append(dt_name)
                cols["qid"].append(qid)
                cols["evaluation"].append(e.name)
                cols["inputs"].append(e.inputs)
                cols["query_text"].append(texts.query.get(qid, ""))
                cols["enhanced_query_text"].append(texts.enhanced.get(qid, "") if use_query else "")
                cols["rank_baseline"].append(int(b.first_rank[i]) or None)
                cols["rank"].append(int(v.first_rank[i]) or None)
                cols["rank_change"].append(int(change[i]))
                cols["positive_enhanced"].append(use_corpus and bool(qrels.get(qid, set()) & texts.enhanced_positives))
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def write_audit(table: pa.Table, path: Path) -> Path:
    with replacing(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _quote(text: str, limit: int = 90) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def largest_moves(table: pa.Table, evaluation: str, top: int) -> list[str]:
    """Markdown: per dataset-task, the ``top`` largest gains and losses of ``evaluation`` against the baseline."""
    df = table.filter(pc.equal(table["evaluation"], evaluation)).to_pandas()
    if df.empty or top == 0:
        return []
    lines = ["| dataset-task | qid | rank baseline → row | change | query | enhanced query | positive enhanced |",
             "|---|---|---|---:|---|---|---|"]
    for dt, group in df.groupby("dataset_task", sort=False):
        ordered = group.sort_values(["rank_change", "qid"], ascending=[False, True])
        picks = [r for r in ordered.head(top).itertuples() if r.rank_change > 0]
        picks += [r for r in ordered.tail(top)[::-1].itertuples() if r.rank_change < 0]
        for r in picks:
            before = "–" if np.isnan(r.rank_baseline) else int(r.rank_baseline)
            after = "–" if np.isnan(r.rank) else int(r.rank)
            lines.append(f"| {dt} | {r.qid} | {before} → {after} | {r.rank_change:+d} | {_quote(r.query_text)} | "
                         f"{_quote(r.enhanced_query_text)} | {'yes' if r.positive_enhanced else 'no'} |")
    return lines
