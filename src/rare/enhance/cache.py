"""Content-addressed generation cache (SQLite, WAL) shared by threads, processes and reruns.

Keys hash everything the model sees plus who generated it (see ``Engine._address``), so an
identical input anywhere (the global pool repeats every local pool entry) is generated once.
Only completed generations are stored, one transaction per batch, committed while the backend
runs the next batch: a kill -9 loses at most the batches in flight. A second table memoises image digests by (size, mtime), so a
rerun or a repeated pool does not re-read hundreds of GB of images just to hash them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from rare.enhance.backends.base import EnhanceResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, text TEXT NOT NULL, tokens_in INTEGER, tokens_out INTEGER, finish_reason TEXT
);
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, digest TEXT NOT NULL
);
"""
_CHUNK = 500  # SQLite's bound-parameter limit is far above this


def file_digest(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


class Cache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        """One connection per thread; WAL lets readers run beside the one writer."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable against process kills, which is what resume needs
            self._local.conn = conn
        return conn

    def get_many(self, keys: Sequence[str]) -> dict[str, EnhanceResult]:
        found: dict[str, EnhanceResult] = {}
        conn = self._conn()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT key, text, tokens_in, tokens_out, finish_reason FROM results WHERE key IN ({marks})", chunk
            )
            for key, text, tin, tout, finish in rows:
                found[key] = EnhanceResult(text=text, tokens_in=tin, tokens_out=tout, finish_reason=finish)
        return found

    def put_many(self, items: Iterable[tuple[str, EnhanceResult]]) -> None:
        """Store completed generations in one transaction; results with an error are never cached."""
        rows = [(k, r.text, r.tokens_in, r.tokens_out, r.finish_reason) for k, r in items if r.text is not None]
        if not rows:
            return
        conn = self._conn()
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)", rows)

    def image_digests(self, paths: Sequence[str]) -> dict[str, str]:
        """Digest of each readable file; missing or unreadable files are left out (the caller records why)."""
        conn = self._conn()
        stats: dict[str, tuple[int, int]] = {}
        for p in dict.fromkeys(paths):  # a shard may name one image many times: stat it once
            try:
                st = os.stat(p)
            except OSError:
                continue
            stats[p] = (st.st_size, st.st_mtime_ns)
        names = list(stats)
        known: dict[str, tuple[int, int, str]] = {}
        for start in range(0, len(names), _CHUNK):
            chunk = names[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for name, size, mtime, digest in conn.execute(
                f"SELECT path, size, mtime_ns, digest FROM images WHERE path IN ({marks})", chunk
            ):
                known[name] = (size, mtime, digest)
        out: dict[str, str] = {}
        fresh = []
        for name, (size, mtime) in stats.items():
            memo = known.get(name)
            if memo is not None and memo[:2] == (size, mtime):
                out[name] = memo[2]
                continue
            try:
                out[name] = file_digest(name)
            except OSError:
                continue
            fresh.append((name, size, mtime, out[name]))
        if fresh:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?)", fresh)
        return out

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
