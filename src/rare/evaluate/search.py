"""Exact inner-product top-k over candidate matrices streamed from disk.

Candidates are read one chunk at a time with plain file reads rather than a memory map, so
resident memory is one chunk plus one score block whatever the pool size: the 5.6M x 768 fp16
global pool (8.6 GB) is searched in about 1 GB. Results are exact and deterministic: the same as
sorting every score of a query with (-score, did order) as the key, whatever the chunking or
the query batching (tests/test_evaluate_search.py checks this against a brute-force sort).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

Source = np.ndarray | Path  # an in-memory [N, D] array, or a .npy file of one
Backend = Literal["torch", "faiss"]
_NO_KEY = torch.iinfo(torch.int64).max


def did_order(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """Rank of each did in ascending (dataset id, number) order: the tie-break for equal scores.

    Ids that are not "<int>:<int>" fall back to plain string order for the whole pool.
    """
    arr = pa.array(np.asarray(ids, dtype=str))
    try:
        parts = pc.split_pattern(arr, ":", max_splits=1)
        if len(arr) and pc.min(pc.list_value_length(parts)).as_py() != 2:
            raise ValueError
        pairs = pc.cast(pc.list_flatten(parts), pa.int64()).to_numpy().reshape(-1, 2)
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    except (pa.ArrowInvalid, ValueError):
        order = np.argsort(np.asarray(ids, dtype=str), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order), dtype=np.int64)
    return ranks


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered 2-d array, got shape {shape} (fortran={fortran})")
        return shape, dtype, fh.tell()


def source_shape(src: Source) -> tuple[int, int]:
    if isinstance(src, np.ndarray):
        if src.ndim != 2:
            raise ValueError(f"candidate matrix must be 2-d, got shape {src.shape}")
        return src.shape[0], src.shape[1]
    shape, _, _ = _npy_header(Path(src))
    return shape[0], shape[1]


def iter_chunks(sources: Sequence[Source], rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(global row offset, chunk in its stored dtype) over the sources concatenated.

    One read buffer is reused per file, so a chunk is valid until the next one is drawn. Chunks stay
    in their stored dtype (fp16 for cached embeddings) so a GPU receives half the bytes and upcasts there.
    """
    offset = 0
    for src in sources:
        if isinstance(src, np.ndarray):
            for a in range(0, len(src), rows):
                yield offset + a, np.ascontiguousarray(src[a:a + rows])
            offset += len(src)
            continue
        (n, d), dtype, start = _npy_header(Path(src))
        buf = np.empty((min(rows, n), d), dtype=dtype)
        with open(src, "rb") as fh:
            fh.seek(start)
            for a in range(0, n, rows):
                view = buf[: min(rows, n - a)]
                got = fh.readinto(view.reshape(-1).view(np.uint8))
                if got != view.nbytes:
                    raise ValueError(f"{src}: truncated at row {a} (expected {n} rows)")
                yield offset + a, view
        offset += n


class _TopK:
    """Running best k per query, kept sorted by (-score, key)."""

    def __init__(self, n_queries: int, k: int, device: torch.device):
        self.scores = torch.full((n_queries, k), -torch.inf, device=device)
        self.keys = torch.full((n_queries, k), _NO_KEY, dtype=torch.int64, device=device)
        self.rows = torch.full((n_queries, k), -1, dtype=torch.int64, device=device)

    def merge(self, q: slice, scores: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor) -> None:
        s = torch.cat([self.scores[q], scores], dim=1)
        kk = torch.cat([self.keys[q], keys], dim=1)
        r = torch.cat([self.rows[q], rows], dim=1)
        # Lexicographic (-score, key): stable sort by key, then stable sort by score descending.
        kk, by_key = kk.sort(dim=1, stable=True)
        s, r = s.gather(1, by_key), r.gather(1, by_key)
        _, by_score = s.sort(dim=1, descending=True, stable=True)
        top = by_score[:, : self.scores.shape[1]]
        self.scores[q], self.keys[q], self.rows[q] = s.gather(1, top), kk.gather(1, top), r.gather(1, top)


def _scores(q: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
    """``q @ chunk.T`` in fp32. On CPU through numpy's BLAS (OpenBLAS), a public path: on this AMD CPU it
    takes about 1.1x the time of oneDNN's (private) linear kernel and 0.8x torch.mm's MKL at the evaluation's
    1,024-query blocks, and is the fastest of the three at serving's few queries (docs/serving.md). Both
    tensors share their memory with the arrays, so nothing is copied."""
    if q.device.type == "cpu":
        return torch.from_numpy(q.numpy() @ chunk.numpy().T)
    return q @ chunk.T


def _block_topk(block: torch.Tensor, k: int, group: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest k scores per row (values exact) at a fraction of a full-row topk's cost.

    The top k of a row lie in the k groups of ``group`` columns with the largest maxima: at most
    k groups hold a value above the k-th largest v, and any further slot goes to a group whose
    maximum equals v. So one pass of group maxima plus a topk over k groups (and the ragged tail)
    replaces the full topk.
    """
    rows, m = block.shape
    whole = m // group * group
    if whole < k * group:
        return block.topk(k, dim=1, sorted=True)
    n_groups = whole // group
    best = block[:, :whole].view(rows, n_groups, group).amax(dim=2).topk(k, dim=1).indices
    if whole == m:  # copy the chosen groups out as contiguous runs
        flat = (best + torch.arange(rows, device=block.device)[:, None] * n_groups).reshape(-1)
        vals, pos = block.view(rows * n_groups, group).index_select(0, flat).view(rows, k * group).topk(k, dim=1)
        return vals, best.gather(1, pos // group) * group + pos % group
    cols = (best[:, :, None] * group + torch.arange(group, device=block.device)).reshape(rows, k * group)
    cols = torch.cat([cols, torch.arange(whole, m, device=block.device).expand(rows, m - whole)], dim=1)
    vals, pos = block.gather(1, cols).topk(k, dim=1, sorted=True)
    return vals, cols.gather(1, pos)


def _fix_boundary_ties(block: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, k: int,
                       key_of: torch.Tensor | None, offset: int) -> None:
    """topk picks arbitrarily among candidates tied at the k-th score; re-pick those by key."""
    tied = (vals[:, k - 1] == vals[:, k]).nonzero().flatten().tolist()
    for r in tied:
        row, thr = block[r], vals[r, k - 1]
        above = (row > thr).nonzero().flatten()
        equal = (row == thr).nonzero().flatten()
        keys = equal + offset if key_of is None else key_of[equal + offset]
        pick = equal[keys.argsort()[: k - len(above)]]
        chosen = torch.cat([above, pick])
        idx[r, :k], vals[r, :k] = chosen, row[chosen]


def _faiss_index(chunk: np.ndarray):  # noqa: ANN202 - faiss types are SWIG objects
    """A flat inner-product index of one chunk; with faiss-gpu (the ``gpu`` extra) and several GPUs its
    rows are sharded over them (each GPU holds 1/n of the chunk, results merged by faiss), not replicated."""
    import faiss

    index = faiss.IndexFlatIP(chunk.shape[1])
    if hasattr(faiss, "GpuMultipleClonerOptions") and faiss.get_num_gpus() > 0:  # faiss-cpu has neither
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        index = faiss.index_cpu_to_all_gpus(index, co=options)
    index.add(chunk)
    return index


def _scan(queries: np.ndarray, srcs: list[Source], best: _TopK, order: np.ndarray | None, backend: Backend,
          dev: torch.device, query_batch: int, cand_chunk: int) -> None:
    """Stream the candidate chunks once; every query batch is scored against each chunk and merged into ``best``."""
    nq, k = best.scores.shape
    q_np = np.ascontiguousarray(queries, dtype=np.float32)
    q_all = torch.from_numpy(q_np).to(dev)
    key_of = None if order is None else torch.from_numpy(np.asarray(order, dtype=np.int64)).to(dev)
    qb = min(query_batch, nq)

    for offset, chunk_np in iter_chunks(srcs, cand_chunk):
        chunk = torch.from_numpy(chunk_np).to(dev, non_blocking=True).float()
        m = len(chunk)
        kk = min(k, m)
        faiss_hits = None
        if backend == "faiss" and m > kk:
            faiss_d, faiss_i = _faiss_index(np.ascontiguousarray(chunk_np, dtype=np.float32)).search(q_np, kk + 1)
            faiss_hits = (torch.from_numpy(faiss_d).to(dev), torch.from_numpy(faiss_i).to(dev))
        for a in range(0, nq, qb):
            q = slice(a, min(a + qb, nq))
            if faiss_hits is not None and not bool((faiss_hits[0][q, kk - 1] == faiss_hits[0][q, kk]).any()):
                vals, idx = faiss_hits[0][q, :kk], faiss_hits[1][q, :kk]
            else:
                block = _scores(q_all[q], chunk)
                if m > kk:
                    vals, idx = _block_topk(block, kk + 1)
                    _fix_boundary_ties(block, vals, idx, kk, key_of, offset)
                    vals, idx = vals[:, :kk], idx[:, :kk]
                else:
                    vals, idx = block, torch.arange(m, device=dev).expand(len(block), m)
            rows = idx.to(torch.int64) + offset
            keys = rows if key_of is None else key_of[rows]
            best.merge(q, vals.contiguous(), keys, rows)


def search(
    queries: np.ndarray,
    sources: Source | Sequence[Source],
    k: int,
    *,
    order: np.ndarray | None = None,
    backend: Backend = "torch",
    device: str = "cpu",
    query_batch: int = 1024,
    cand_chunk: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``queries @ candidates.T``: (scores [Q, k'] float32, rows [Q, k'] int64), best first.

    ``sources`` are concatenated row-wise; ``rows`` index that concatenation. ``order`` ranks each
    candidate (see ``did_order``) and breaks equal scores; None means row order. k' = min(k, N).
    The faiss backend scores each chunk with ``IndexFlatIP`` (sharded over every GPU when faiss has some);
    queries whose k-th and (k+1)-th scores tie in a chunk are re-scored with torch so ties stay exact.
    """
    srcs = [sources] if isinstance(sources, (np.ndarray, Path)) else list(sources)
    n = sum(source_shape(s)[0] for s in srcs)
    dims = {source_shape(s)[1] for s in srcs}
    if dims - {queries.shape[1]}:
        raise ValueError(f"dimension mismatch: queries have {queries.shape[1]}, candidates {sorted(dims)}")
    if order is not None and len(order) != n:
        raise ValueError(f"order has {len(order)} entries for {n} candidates")
    if backend not in ("torch", "faiss"):
        raise ValueError(f"unknown search backend {backend!r}; allowed: ['torch', 'faiss']")
    dev = torch.device(device)
    nq, k = len(queries), min(k, n)
    best = _TopK(nq, k, dev)
    if nq == 0 or k == 0:
        return best.scores.cpu().numpy(), best.rows.cpu().numpy()
    _scan(queries, srcs, best, order, backend, dev, query_batch, min(cand_chunk, n))
    return best.scores.cpu().numpy(), best.rows.cpu().numpy()
