"""Columnar (Arrow IPC) cache of candidate pools for random access by did.

Training needs the positive of every query by did, over pools of up to 5.6M entries. The
JSONL is converted once by pyarrow's streaming JSON reader into a memory-mapped Arrow file,
and dids are looked up through a sorted int64 key, so no per-record Python objects are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.json as pj

from rare.atomic import replacing
from rare.data.input_error import DataError
from rare.data.records import Candidate, iter_candidates, parse_enhanced
from rare.hashing import key_digest

ENHANCED_TYPE = pa.struct([
    ("op", pa.string()), ("status", pa.string()), ("txt", pa.string()), ("cause", pa.string()),
    ("backend", pa.string()), ("model", pa.string()), ("prompt_version", pa.string()),
])
POOL_SCHEMA = pa.schema([
    ("did", pa.string()), ("txt", pa.string()), ("img_path", pa.string()), ("modality", pa.string()),
    ("src_content", pa.string()), ("enhanced", ENHANCED_TYPE),
])
_BLOCK = 8 << 20


def cache_file(source: Path, cache_dir: Path, version: str) -> Path:
    """Arrow cache path keyed by the source's path, size and mtime (and the converter's version)."""
    st = source.stat()
    return cache_dir / f"{source.stem}-{key_digest(str(source.resolve()), st.st_size, st.st_mtime_ns, version)}.arrow"


def write_arrow(out: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Path:
    """Write an Arrow IPC file atomically (temp + rename): a killed conversion leaves no half cache."""
    with replacing(out) as tmp, pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return out


def iter_pool_batches(jsonl: str | Path) -> Iterator[pa.RecordBatch]:
    """Stream a pool as Arrow record batches (C++ parser, bounded memory)."""
    jsonl = Path(jsonl)
    try:
        reader = pj.open_json(
            jsonl,
            read_options=pj.ReadOptions(block_size=_BLOCK),
            parse_options=pj.ParseOptions(explicit_schema=POOL_SCHEMA, unexpected_field_behavior="ignore"),
        )
        for batch in reader:
            yield batch.select(POOL_SCHEMA.names)
    except pa.ArrowInvalid as exc:
        # Arrow's message has no line number: re-read with the Python parser to name the line.
        for _ in iter_candidates(jsonl):
            pass
        raise DataError(jsonl, None, f"cannot convert to Arrow ({exc})") from None


def build_pool_cache(jsonl: str | Path, cache_dir: str | Path) -> Path:
    jsonl, cache_dir = Path(jsonl), Path(cache_dir)
    out = cache_file(jsonl, cache_dir, "pool-v1")
    return out if out.exists() else write_arrow(out, POOL_SCHEMA, iter_pool_batches(jsonl))


def _numeric_keys(dids: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """"<dataset_id>:<n>" -> dataset_id << 40 | n; None if any id doesn't fit that form."""
    parts = pc.split_pattern(dids, ":", max_splits=1)
    flat = parts.combine_chunks() if isinstance(parts, pa.ChunkedArray) else parts
    lens = pc.list_value_length(flat).to_numpy(zero_copy_only=False)
    if len(lens) and (lens != 2).any():
        return None
    try:
        pairs = pc.cast(flat.flatten(), pa.int64()).to_numpy().reshape(-1, 2)
    except (pa.ArrowInvalid, ValueError):
        return None
    if len(pairs) and (pairs.min() < 0 or pairs[:, 1].max() >= 1 << 40 or pairs[:, 0].max() >= 1 << 22):
        return None
    return (pairs[:, 0] << 40) | pairs[:, 1]


class ColumnarPool:
    """A memory-mapped candidate pool with did -> row lookup."""

    def __init__(self, arrow_file: str | Path, source: str | Path | None = None):
        self.source = Path(source) if source else Path(arrow_file)
        self.table: pa.Table = ipc.open_file(pa.memory_map(str(arrow_file), "r")).read_all()
        dids = self.table.column("did")
        keys = _numeric_keys(dids)
        if keys is not None:
            self._order = np.argsort(keys, kind="stable")
            self._sorted = keys[self._order]
            self._dict: dict[str, int] | None = None
        else:
            self._dict = {d: i for i, d in enumerate(dids.to_pylist())}
        self._check_unique(dids)

    def _check_unique(self, dids: pa.ChunkedArray) -> None:
        if self._dict is not None:
            dup = len(self._dict) != len(dids)
        else:
            dup = bool(len(self._sorted) > 1 and (np.diff(self._sorted) == 0).any())
        if dup:
            counts = pc.value_counts(dids).to_pylist()
            first = next(c["values"] for c in counts if c["counts"] > 1)
            raise DataError(self.source, None, f"duplicate did {first!r} in candidate pool")

    @classmethod
    def open(cls, jsonl: str | Path, cache_dir: str | Path) -> ColumnarPool:
        return cls(build_pool_cache(jsonl, cache_dir), source=jsonl)

    def __len__(self) -> int:
        return self.table.num_rows

    def __contains__(self, did: str) -> bool:
        return self.index_of(did, missing_ok=True) >= 0

    def index_of(self, did: str, missing_ok: bool = False) -> int:
        if self._dict is not None:
            row = self._dict.get(did, -1)
        else:
            key = _numeric_keys(pa.array([did]))
            row = -1
            if key is not None:
                pos = int(np.searchsorted(self._sorted, key[0]))
                if pos < len(self._sorted) and self._sorted[pos] == key[0]:
                    row = int(self._order[pos])
        if row < 0 and not missing_ok:
            raise KeyError(f"did {did!r} is not in pool {self.source}")
        return row

    def row(self, i: int) -> Candidate:
        rec = {name: self.table.column(name)[i].as_py() for name in POOL_SCHEMA.names}
        return Candidate(
            did=rec["did"], txt=rec["txt"] or "", img_path=rec["img_path"], modality=rec["modality"],
            src_content=rec["src_content"], enhanced=parse_enhanced(rec["enhanced"]),
        )

    def get(self, did: str) -> Candidate:
        return self.row(self.index_of(did))

    def take(self, dids: Sequence[str]) -> list[Candidate]:
        return [self.get(d) for d in dids]

