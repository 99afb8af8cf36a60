"""The one cache-key recipe and the one file hash, and the atomic writers every stage uses."""

from __future__ import annotations

import hashlib
import json

import pytest

from rare.atomic import atomic_write_text, replacing, replacing_folder
from rare.hashing import file_digest, key_digest


def test_key_digest_is_blake2b_of_canonical_json():
    # The enhancement item cache predates this module: its keys must not move, or every cached item is lost.
    parts = ("standin", {"b": 1, "a": [1, 2]}, None)
    expected = hashlib.blake2b(json.dumps(list(parts), sort_keys=True).encode(), digest_size=16).hexdigest()
    assert key_digest(*parts) == expected
    assert key_digest("x", {"a": 1, "b": 2}) == key_digest("x", {"b": 2, "a": 1})  # key order never matters
    assert len({key_digest("a", "b"), key_digest("ab"), key_digest("b", "a"), key_digest(["a", "b"])}) == 4


def test_file_digest_reads_bytes_not_names(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    c.write_bytes(b"other")
    assert file_digest(a) == file_digest(b) != file_digest(c)
    assert len(file_digest(a)) == 32


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out" / "f.json"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n" and sorted(p.name for p in path.parent.iterdir()) == ["f.json"]
    with replacing(path) as tmp:
        tmp.write_text("new\n")
    assert path.read_text() == "new\n"


def test_a_failed_folder_leaves_the_old_folder(tmp_path):
    out = tmp_path / "model"
    with replacing_folder(out) as tmp:
        (tmp / "w").write_text("1")
    with pytest.raises(RuntimeError), replacing_folder(out) as tmp:
        (tmp / "w").write_text("2")
        raise RuntimeError("killed")
    assert (out / "w").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["model"]
