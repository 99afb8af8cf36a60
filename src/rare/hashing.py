"""Content hashes and cache keys, one recipe each, so no two caches disagree on what "the same" means.

A cache key is the digest of everything the cached result depends on, written as canonical JSON
(sorted keys): a new input is a new part, never a new recipe. Files are identified by their bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

_KEY_JSON = json.JSONEncoder(sort_keys=True).encode  # the same text as json.dumps(.., sort_keys=True), built once


def key_digest(*parts: Any) -> str:
    """The cache key of ``parts`` (JSON-serialisable): 32 hex digits (blake2b, 128 bits)."""
    return hashlib.blake2b(_KEY_JSON(parts).encode(), digest_size=16).hexdigest()


def code_digest(*modules: ModuleType) -> str:
    """The source of ``modules`` (a package: every .py file in its folder), for caches whose results
    that code computes: an edit must never be served stale results."""
    h = hashlib.blake2b(digest_size=16)
    for module in modules:
        path = Path(module.__file__ or "")
        for f in sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]:
            h.update(f.read_bytes())
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    """``file_digest`` of bytes already in memory: the same 32 hex digits as the file holding them."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: str | Path) -> str:
    """The content hash of a file's bytes, streamed: 32 hex digits (blake2b, 128 bits)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def sha256_lines(path: str | Path) -> tuple[str, int]:
    """The sha256 of a file's bytes and its number of newlines, in one streamed pass (for manifests)."""
    h, lines = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            lines += chunk.count(b"\n")
    return h.hexdigest(), lines
