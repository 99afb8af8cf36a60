"""Content-addressed generation cache (SQLite, WAL) shared by the threads, processes and reruns of one node.

On a cluster each node keeps its own (``enhance.item_cache_dir`` on local disk): SQLite documents
that WAL does not work over a network filesystem, where its shared-memory index cannot be
shared between hosts. The finished shards on shared storage are what the nodes have in common;
an item cache only spares a node work it already did. A cache found on a network filesystem
falls back to SQLite's rollback journal (slower, but correct wherever POSIX locks work).

Keys hash everything the model sees plus who generated it (see ``Engine._address``), so an
identical input anywhere (the global pool repeats every local pool entry) is generated once.
Only completed generations are stored, one transaction per batch, committed while the backend
runs the next batch: a kill -9 loses at most the batches in flight. A second table memoises image digests by (size, mtime), so a
rerun or a repeated pool does not re-read hundreds of GB of images just to hash them.

The cache is never the only copy of anything: a damaged one (not a SQLite file, shorter than its
header says, or refused by SQLite) is moved aside with a warning and a fresh one is started, beside a
marker (``cache.sqlite.refill``) that asks every engine to refill it from its own finished shards
(``Engine.rebuild_cache``) and lists the engines (fingerprints) that did: keys depend on the engine's
settings, so the corpus and the queries, or two models, refill in turn. A fingerprint is listed only
after its refill, so a killed refill is done again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rare.atomic import atomic_write_text
from rare.enhance.backends.interface import EnhanceResult
from rare.failures import print_warning
from rare.hashing import file_digest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, text TEXT NOT NULL, tokens_in INTEGER, tokens_out INTEGER, finish_reason TEXT
);
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, digest TEXT NOT NULL
);
"""
_CHUNK = 500  # SQLite's bound-parameter limit is far above this


NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "fuse.glusterfs",
                        "glusterfs", "ceph", "fuse.ceph", "9p", "fuse.sshfs", "afs", "fuse.juicefs", "wekafs"})


def filesystem_type(path: str | Path, mounts: str | None = None) -> str:
    """The type of the filesystem holding ``path``, from /proc/mounts (longest mount point wins); "" if unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return ""
    path = os.path.realpath(path)
    best, fstype = "", ""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, parts[2]
    return fstype


def journal_mode(path: str | Path) -> str:
    return "DELETE" if filesystem_type(Path(path).parent) in NETWORK_FS else "WAL"


_MAGIC = b"SQLite format 3\x00"


def damage(path: Path) -> str | None:
    """Why the SQLite file at ``path`` cannot be trusted, from its 100-byte header alone (cheap at any
    size): not a SQLite file, or shorter than the page count its header records (truncated)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = fh.read(100)
    except FileNotFoundError:
        return None
    if size == 0:
        return None  # SQLite's own state before its first write
    if len(header) < 100 or header[:16] != _MAGIC:
        return "not a SQLite database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the page count is only meaningful when these agree
    if valid and pages and size < pages * page_size:
        return f"truncated: {size} bytes, its header records {pages} pages of {page_size} bytes"
    return None


def refill_marker(path: Path) -> Path:
    """Beside a cache started after a damaged one: the engines (fingerprints) that refilled it, one a line."""
    return path.with_name(f"{path.name}.refill")


def move_aside(path: Path, cause: str) -> Path:
    """Rename a damaged cache (with its WAL files) out of the way, keeping it for inspection, and mark
    the fresh one for a refill from the shards (the marker first: a kill in between still refills)."""
    atomic_write_text(refill_marker(path), "")
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        pass  # another worker moved it first
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    print_warning(f"{path}: damaged item cache ({cause}); moved aside to {aside.name}, starting a fresh one "
                  f"rebuilt from the finished shards")
    return aside


class DamagedCache(ValueError):
    """SQLite found damage mid-run (a page in the middle rewritten): the cache is moved aside, a rerun continues."""


class Cache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[sqlite3.Connection] = set()
        self.journal_mode = journal_mode(self.path)
        cause = damage(self.path)
        if cause is None:
            try:
                self._conn().executescript(_SCHEMA)
                self._conn().execute("SELECT key FROM results LIMIT 1").fetchall()
                return
            except sqlite3.DatabaseError as exc:
                cause = str(exc)
                self.close()
        move_aside(self.path, cause)
        self._conn().executescript(_SCHEMA)

    def needs_refill(self, engine: str) -> bool:
        """Started after a damaged cache, and not yet refilled from the shards of ``engine`` (a fingerprint)."""
        try:
            return engine not in refill_marker(self.path).read_text().split()
        except FileNotFoundError:
            return False

    def refilled(self, engine: str) -> None:
        marker = refill_marker(self.path)
        done = marker.read_text() if marker.exists() else ""
        atomic_write_text(marker, done + engine + "\n")

    def _conn(self) -> sqlite3.Connection:
        """One connection per thread; WAL (on local disk) lets readers run beside the one writer."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn not in self._open:
            # Used by this thread only; closed by ``close`` from whichever thread ends the run.
            conn = sqlite3.connect(self.path, timeout=120, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable against process kills, which is what resume needs
            self._local.conn = conn
            with self._lock:
                self._open.add(conn)
        return conn

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """A damaged page found by a query: one error line naming the cache, which is moved aside."""
        try:
            yield
        except sqlite3.OperationalError:
            raise  # locked, disk full: not damage
        except sqlite3.DatabaseError as exc:
            if self.path.exists():
                move_aside(self.path, str(exc))
            raise DamagedCache(f"{self.path}: damaged item cache ({exc}); moved aside, rerun to continue "
                               f"(finished shards are kept)") from None

    def get_many(self, keys: Sequence[str]) -> dict[str, EnhanceResult]:
        with self._guard():
            return self._get_many(keys)

    def _get_many(self, keys: Sequence[str]) -> dict[str, EnhanceResult]:
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
        with self._guard(), conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)", rows)

    def image_digests(self, paths: Sequence[str]) -> dict[str, str]:
        """Digest of each readable file; missing or unreadable files are left out (the caller records why)."""
        with self._guard():
            return self._image_digests(paths)

    def _image_digests(self, paths: Sequence[str]) -> dict[str, str]:
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
        """Every thread's connection: the last one to close checkpoints the WAL into the file, so a finished
        run leaves one settled file, not a WAL that a later, unrelated close would fold in."""
        with self._lock:
            conns, self._open = self._open, set()
        for conn in conns:
            conn.close()
        self._local.conn = None
