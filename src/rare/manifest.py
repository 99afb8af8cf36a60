"""Manifests: what rare wrote, so that what it reads back later is what it wrote.

Every artifact that rare writes and later trusts (a model export, an embedding cache entry, a stored
enhancement shard) gets a ``manifest.json`` holding each file's size and sha256, plus the row count of
a ``.jsonl`` file and the shape of a ``.npy`` file. The manifest is written last and atomically, so its
presence also means "complete"; a file removed, truncated, swapped or rewritten afterwards fails
``verify`` with one message naming the file and what is wrong.

Verification comes in two strengths, so that checking stays cheap where data is large: ``full``
re-hashes every file (for readers that read the whole file anyway: a model load, a shard that is
concatenated into the output), ``sizes`` checks sizes and ``.npy`` headers only (a memory-mapped
5.6M-row embedding matrix is never read whole just to be opened).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from rare.atomic import atomic_write_text
from rare.hashing import sha256_lines

MANIFEST_FILE = "manifest.json"
FORMAT = 1


class ManifestError(ValueError):
    """An artifact that does not match its manifest: the message names the file and the difference."""


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int
    sha256: str
    rows: int | None = None          # .jsonl: lines
    shape: list[int] | None = None   # .npy: the array's shape
    dtype: str | None = None         # .npy: the array's dtype


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = FORMAT
    files: dict[str, FileEntry]      # path relative to the manifest's folder (posix) -> entry


def npy_header(path: Path) -> tuple[list[int], str]:
    """Shape and dtype from a ``.npy`` header, without reading the data."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    return list(shape), dtype.str


def describe_file(path: Path) -> FileEntry:
    """The entry of one file as it is now: its bytes hashed once, rows and shape where they apply."""
    digest, lines = sha256_lines(path)
    size = path.stat().st_size
    if path.suffix == ".npy":
        shape, dtype = npy_header(path)
        return FileEntry(size=size, sha256=digest, shape=shape, dtype=dtype)
    if path.suffix == ".jsonl":
        return FileEntry(size=size, sha256=digest, rows=lines)
    return FileEntry(size=size, sha256=digest)


def write_manifest(manifest_path: Path, files: Iterable[Path]) -> Manifest:
    """Describe ``files`` (under the manifest's folder) and write the manifest atomically: call it last."""
    base = manifest_path.parent
    entries = {f.relative_to(base).as_posix(): describe_file(f) for f in sorted(files)}
    manifest = Manifest(files=entries)
    atomic_write_text(manifest_path, json.dumps(manifest.model_dump(exclude_none=True), indent=1, sort_keys=True)
                      + "\n")
    return manifest


def write_folder_manifest(folder: Path) -> Manifest:
    """A manifest of every file under ``folder`` (a model export, a cache entry), written last."""
    manifest_path = folder / MANIFEST_FILE
    return write_manifest(manifest_path, (p for p in folder.rglob("*") if p.is_file() and p != manifest_path))


def read_manifest(manifest_path: Path) -> Manifest:
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{manifest_path}: missing; the artifact is incomplete or was written by an older "
                            f"rare (delete it and rebuild it)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{manifest_path}: cannot be read ({exc})") from None
    try:
        manifest = Manifest.model_validate_json(text)
    except ValidationError as exc:
        raise ManifestError(f"{manifest_path}: not a valid manifest ({exc.errors()[0]['msg']})") from None
    if manifest.format != FORMAT:
        raise ManifestError(f"{manifest_path}: manifest format {manifest.format}; this code reads format {FORMAT}")
    return manifest


def verify(manifest_path: Path, full: bool | Collection[str]) -> Manifest:
    """Check every listed file against the manifest: sizes and .npy headers always; contents re-hashed
    when ``full`` is True or names the file (the ones the caller reads whole anyway).

    Raises ``ManifestError`` naming the first file that differs and how."""
    manifest = read_manifest(manifest_path)
    base = manifest_path.parent
    for name, want in manifest.files.items():
        path = base / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ManifestError(f"{path}: missing (listed in {manifest_path.name})") from None
        if size != want.size:
            raise ManifestError(f"{path}: {size} bytes, the manifest says {want.size} (truncated or rewritten)")
        if want.shape is not None:
            try:
                shape, dtype = npy_header(path)
            except (ValueError, OSError) as exc:
                raise ManifestError(f"{path}: unreadable .npy header ({exc})") from None
            if shape != want.shape or dtype != want.dtype:
                raise ManifestError(f"{path}: array {shape} {dtype}, the manifest says {want.shape} {want.dtype}")
        if full is True or (full is not False and name in full):
            digest, lines = sha256_lines(path)
            if digest != want.sha256:
                raise ManifestError(f"{path}: content differs from the manifest (sha256 {digest[:12]}..., "
                                    f"expected {want.sha256[:12]}...)")
            if want.rows is not None and lines != want.rows:
                raise ManifestError(f"{path}: {lines} rows, the manifest says {want.rows}")
    return manifest
