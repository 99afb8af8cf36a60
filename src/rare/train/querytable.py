"""Query files as memory-mapped Arrow tables, for random access from DataLoader workers.

M-BEIR's union training file has 1.33M queries; as Python objects that is gigabytes, copied
again by every forked worker as refcounts touch it. Each file is parsed once (with the data
layer's validating parser, so bad lines name file and line) into an Arrow IPC file in the
cache, keyed by path, size and mtime; later runs only map it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from rare.data.columnar import ENHANCED_TYPE, cache_file, write_arrow
from rare.data.records import Query, iter_queries, parse_enhanced

SCHEMA = pa.schema([
    ("qid", pa.string()), ("txt", pa.string()), ("img_path", pa.string()), ("modality", pa.string()),
    ("task_id", pa.int16()), ("pos", pa.list_(pa.string())), ("enhanced", ENHANCED_TYPE),
])
_BATCH = 65_536


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    rows: list[Query] = []
    for q in iter_queries(path):
        rows.append(q)
        if len(rows) == _BATCH:
            yield _to_batch(rows)
            rows = []
    if rows:
        yield _to_batch(rows)


def _to_batch(rows: list[Query]) -> pa.RecordBatch:
    return pa.record_batch([
        [q.qid for q in rows], [q.txt for q in rows], [q.img_path for q in rows], [q.modality for q in rows],
        [q.task_id for q in rows], [q.pos for q in rows],
        [q.enhanced.to_json() if q.enhanced else None for q in rows],
    ], schema=SCHEMA)


class QueryTable:
    """Row i of a query file as a ``Query`` (positives and enhancement included)."""

    def __init__(self, arrow_file: Path, source: Path):
        self.source = source
        self.table = ipc.open_file(pa.memory_map(str(arrow_file), "r")).read_all()

    @classmethod
    def open(cls, path: str | Path, cache_dir: str | Path) -> QueryTable:
        path, cache_dir = Path(path), Path(cache_dir)
        out = cache_file(path, cache_dir, "queries-v1")
        return cls(out if out.exists() else write_arrow(out, SCHEMA, _batches(path)), path)

    def __len__(self) -> int:
        return self.table.num_rows

    def row(self, i: int) -> Query:
        r = self.table.slice(i, 1).to_pylist()[0]
        return Query(qid=r["qid"], txt=r["txt"] or "", img_path=r["img_path"], modality=r["modality"],
                     task_id=r["task_id"], pos=r["pos"], enhanced=parse_enhanced(r["enhanced"]))
