import json
import tracemalloc

import pytest

from rare.data import DataError
from rare.data.columnar import ColumnarPool, build_pool_cache
from rare.data.records import iter_candidates


def test_pool_matches_jsonl_and_is_cached(tiny_root_session, tmp_path):
    src = tiny_root_session / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
    pool = ColumnarPool.open(src, tmp_path / "cache")
    records = list(iter_candidates(src))
    assert len(pool) == len(records)
    for rec in records[::7]:
        got = pool.get(rec.did)
        assert (got.did, got.txt, got.img_path, got.modality, got.src_content) == (
            rec.did, rec.txt, rec.img_path, rec.modality, rec.src_content)
    assert "6:999001" in pool and "6:424242" not in pool
    with pytest.raises(KeyError, match="not in pool"):
        pool.get("6:424242")
    first = build_pool_cache(src, tmp_path / "cache")
    assert build_pool_cache(src, tmp_path / "cache") == first  # built once
    assert len(list((tmp_path / "cache").glob("*.arrow"))) == 1


def test_non_numeric_ids_and_duplicates(tmp_path):
    rows = [{"did": f"doc-{i}", "txt": f"t{i}", "img_path": None, "modality": "text", "src_content": None}
            for i in range(5)]
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = ColumnarPool.open(src, tmp_path / "c")
    assert pool.get("doc-3").txt == "t3"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:1]))
    with pytest.raises(DataError, match="duplicate did 'doc-0'"):
        ColumnarPool.open(src, tmp_path / "c2")


def test_bad_line_is_named(tmp_path):
    src = tmp_path / "p.jsonl"
    good = {"did": "1:1", "txt": "a", "img_path": None, "modality": "text", "src_content": None}
    src.write_text(json.dumps(good) + "\n" + '{"did": "1:2", "txt": [1], "img_path": null, "modality": "text", "src_content": null}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: 'txt' must be a string"):
        ColumnarPool.open(src, tmp_path / "c")


def test_lookup_memory_is_columnar(tmp_path):
    """200k candidates: the did index is numpy, not a dict of Python strings."""
    src = tmp_path / "big.jsonl"
    with src.open("w") as fh:
        for i in range(200_000):
            fh.write(json.dumps({"did": f"3:{i}", "txt": f"passage {i}", "img_path": None,
                                 "modality": "text", "src_content": None}) + "\n")
    tracemalloc.start()
    pool = ColumnarPool.open(src, tmp_path / "c")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert pool.get("3:123456").txt == "passage 123456"
    assert peak < 30e6, f"python-heap peak {peak / 1e6:.1f} MB"
