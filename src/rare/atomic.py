"""Atomic replacement of files and folders: readers see the old output or the whole new one.

A stage writes its new output beside the old one (a temp sibling in the same folder, so the
rename is atomic) and swaps it in only when it has succeeded; a failed or killed run leaves the
previous good output where it was.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_sibling(path: Path) -> Path:
    """A name beside ``path`` that is unique to this process and thread (and marked with the pid)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def atomic_write(path: Path, chunks: Iterable[bytes]) -> None:
    """Temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, [text.encode("utf-8")])


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """For writers that want a file name (``torch.save``, Arrow, an open handle): they write the yielded
    temp sibling, which is fsynced and renamed onto ``path`` when the block succeeds, removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def replacing_folder(out: Path) -> Iterator[Path]:
    """A fresh empty folder beside ``out`` to write into; swapped in whole when the block succeeds
    (``swap_in``), removed when it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    tmp = temp_sibling(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_in(new: Path, path: Path) -> Path:
    """Put the finished folder (or file) ``new`` at ``path``; the previous one is removed only after the swap."""
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
    return path


def swap_in_files(staged: Path, out: Path) -> Path:
    """Move every file of the finished folder ``staged`` to the same place under ``out``, each by an
    atomic rename; files of ``out`` that ``staged`` does not hold are left alone (the user's own)."""
    for src in sorted(p for p in staged.rglob("*") if p.is_file()):
        dst = out / src.relative_to(staged)
        dst.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(dst)
        os.replace(src, dst)
    return out


def remove_stale_temps(path: Path) -> None:
    """Delete temp siblings that a killed writer of ``path`` left behind (only ours, only dead writers)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with that id exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
