"""WebDataset tar shards: samples are the members sharing a key (the name up to its first dot), with an
image (``.jpg``, ``.jpeg``, ``.png``, ``.webp``) and a text (``.txt``, or ``.json`` holding ``text`` or
``caption`` and an optional ``group``). "Line" in a message is the sample's number in its shard."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from rare.ingest.rows import GROUP_KEYS, TEXT_KEYS, Rejected, Row, Where, clean_group, clean_text, pick

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt", "json")


def shards(path: str) -> list[Path]:
    p = Path(path)
    return sorted(p.glob("*.tar")) if p.is_dir() else [p]


def _split(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _sample(file: str, n: int, key: str, members: dict[str, bytes]) -> Row | Rejected:
    where = Where(file, n, key)
    image_ext = next((e for e in IMAGE_EXTS if e in members), None)
    if image_ext is None:
        return Rejected(where, f"no image member (.{', .'.join(IMAGE_EXTS)}); has {sorted(members)}")
    text = group = None
    if "json" in members:
        try:
            meta = json.loads(members["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return Rejected(where, f"{key}.json is not UTF-8 JSON ({exc})")
        if isinstance(meta, dict):
            tk, gk = pick(meta, TEXT_KEYS), pick(meta, GROUP_KEYS)
            text = clean_text(meta.get(tk)) if tk else None
            group = clean_group(meta.get(gk)) if gk else None
    if text is None and "txt" in members:
        try:
            text = clean_text(members["txt"].decode("utf-8"))
        except UnicodeDecodeError as exc:
            return Rejected(where, f"{key}.txt is not valid UTF-8 (byte at {exc.start})")
    if text is None:
        return Rejected(where, "empty text")
    data = members[image_ext]
    return Row(where, text, group, lambda: data, f"{file}:{key}.{image_ext}")


def read_webdataset(path: str) -> Iterator[Row | Rejected]:
    for shard in shards(path):
        file = str(shard)
        try:
            tar = tarfile.open(shard, "r:*")
        except tarfile.TarError as exc:
            yield Rejected(Where(file, 0), f"not a readable tar archive ({exc})")
            continue
        with tar:
            key: str | None = None
            members: dict[str, bytes] = {}
            n = 0
            for info in tar:
                if not info.isfile():
                    continue
                k, ext = _split(info.name)
                if k != key and key is not None:
                    n += 1
                    yield _sample(file, n, key, members)
                    members = {}
                key = k
                fh = tar.extractfile(info)
                members[ext] = fh.read() if fh else b""
            if key is not None:
                yield _sample(file, n + 1, key, members)
