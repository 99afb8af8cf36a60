"""Exact search: identical to a brute-force sort by (-score, did) whatever the chunking, files or backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rare.evaluate.search import did_order, iter_chunks, search


def _data(seed: int = 0, n: int = 300, q: int = 23, d: int = 6):
    """Small-integer vectors: every dot product is exact in fp16/fp32, and duplicates force many ties."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-2, 3, size=(n // 3, d))
    cands = np.concatenate([base, base[rng.permutation(len(base))], rng.integers(-2, 3, size=(n - 2 * len(base), d))])
    queries = rng.integers(-2, 3, size=(q, d)).astype(np.float32)
    # dids in shuffled order, mixing dataset ids and number widths ("9:10" must sort after "9:9")
    nums = rng.permutation(n)
    dids = np.array([f"{[3, 9, 12][i % 3]}:{int(v)}" for i, v in enumerate(nums)])
    return queries, cands.astype(np.float32), dids


def _key(did: str) -> tuple[int, int]:
    a, b = did.split(":")
    return int(a), int(b)


def brute_force(queries: np.ndarray, cands: np.ndarray, dids: np.ndarray, k: int) -> list[list[str]]:
    scores = queries.astype(np.float64) @ cands.astype(np.float64).T
    return [[dids[j] for j in sorted(range(len(dids)), key=lambda j: (-row[j], _key(dids[j])))[:k]]
            for row in scores]


def test_ties_are_broken_by_did_order_exactly():
    queries, cands, dids = _data()
    ref = brute_force(queries, cands, dids, 10)
    # the data really has ties at the cut-off, or this test would prove nothing
    s = np.sort(queries @ cands.T, axis=1)[:, ::-1]
    assert (s[:, 9] == s[:, 10]).sum() >= 10
    for chunk, qb in [(1024, 1024), (7, 5), (50, 1), (299, 23)]:
        scores, rows = search(queries, cands, 10, order=did_order(dids), cand_chunk=chunk, query_batch=qb)
        assert [list(dids[r]) for r in rows] == ref, (chunk, qb)
        expected = np.take_along_axis(queries @ cands.T, rows, axis=1)
        np.testing.assert_array_equal(scores, expected)


def test_grouped_top_k_on_large_chunks_keeps_exact_ties():
    """Chunks of 128-column multiples take the group-maxima path; ties must still resolve by did."""
    queries, cands, dids = _data(seed=5, n=9000, q=17, d=4)  # 4-d small integers: thousands of exact ties
    rank = {d: i for i, d in enumerate(sorted(dids.tolist(), key=_key))}
    keys = np.array([rank[d] for d in dids])
    full = queries.astype(np.float64) @ cands.astype(np.float64).T
    ref = [list(dids[np.lexsort((keys, -row))[:20]]) for row in full]
    for chunk in (2816, 4096, 9000, 5000):  # multiples of 128, and ragged tails
        _, rows = search(queries, cands, 20, order=did_order(dids), cand_chunk=chunk, query_batch=8)
        assert [list(dids[r]) for r in rows] == ref, chunk


def test_fp16_files_concatenated_match_in_memory(tmp_path: Path):
    queries, cands, dids = _data(seed=1, n=301)
    files = []
    for i, (a, b) in enumerate([(0, 100), (100, 101), (101, 301)]):
        files.append(tmp_path / f"part{i}.npy")
        np.save(files[-1], cands[a:b].astype(np.float16))
    ref = brute_force(queries, cands, dids, 25)
    _, rows = search(queries, files, 25, order=did_order(dids), cand_chunk=64, query_batch=8)
    assert [list(dids[r]) for r in rows] == ref


def test_faiss_backend_gives_the_same_ranking():
    queries, cands, dids = _data(seed=2)
    ref = brute_force(queries, cands, dids, 10)
    scores, rows = search(queries, cands, 10, order=did_order(dids), backend="faiss", cand_chunk=64)
    assert [list(dids[r]) for r in rows] == ref
    t_scores, _ = search(queries, cands, 10, order=did_order(dids))
    np.testing.assert_array_equal(scores, t_scores)


def test_random_float_data_matches_numpy_argsort():
    rng = np.random.default_rng(3)
    cands = rng.standard_normal((2000, 32)).astype(np.float32)
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    _, rows = search(queries, cands, 50, cand_chunk=300, query_batch=16)
    full = queries @ cands.T
    np.testing.assert_array_equal(rows, np.argsort(-full, axis=1, kind="stable")[:, :50])


def test_k_larger_than_pool_returns_every_candidate_ranked():
    queries, cands, dids = _data(seed=4, n=9, q=3)
    scores, rows = search(queries, cands, 50, order=did_order(dids))
    assert rows.shape == (3, 9)
    assert [list(dids[r]) for r in rows] == brute_force(queries, cands, dids, 9)


def test_without_order_ties_go_to_the_lower_row():
    cands = np.ones((5, 2), dtype=np.float32)
    _, rows = search(np.ones((1, 2), dtype=np.float32), cands, 3, cand_chunk=2)
    assert rows.tolist() == [[0, 1, 2]]


def test_did_order_numeric_then_string_fallback():
    assert did_order(["9:10", "9:9", "1:500", "10:0"]).tolist() == [2, 1, 0, 3]
    assert did_order(["b", "a", "c:x"]).tolist() == [1, 0, 2]


def test_dimension_mismatch_and_truncated_file_are_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="dimension mismatch"):
        search(np.ones((1, 3), np.float32), np.ones((4, 2), np.float32), 2)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((10, 4), np.float16))
    bad.write_bytes(bad.read_bytes()[:-8])
    with pytest.raises(ValueError, match="truncated"):
        list(iter_chunks([bad], 4))
