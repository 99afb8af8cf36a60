"""A folder of images with a captions file (CSV, TSV or JSONL): image path, text, optional group id.

Each physical line is one row and is decoded on its own, so a line in a bad encoding rejects that row
only. Image paths are relative to the captions file's folder (or absolute). CSV/TSV need a header line
naming the columns (``image``, ``text``, ``group``; see ``rows`` for the accepted synonyms); quoted
fields may not span lines.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from rare.ingest.rows import GROUP_KEYS, IMAGE_KEYS, TEXT_KEYS, Rejected, Row, Where, clean_group, clean_text, pick


def _lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, cause): text None with the cause when the line is not UTF-8."""
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield n, None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                continue
            yield n, text.rstrip("\r\n"), None


def _row(path: Path, line: int, record: dict) -> Row | Rejected:
    where = Where(str(path), line)
    image_key, text_key = pick(record, IMAGE_KEYS), pick(record, TEXT_KEYS)
    if image_key is None or not str(record[image_key] or "").strip():
        return Rejected(where, "no image path")
    text = clean_text(record.get(text_key)) if text_key else None
    if text is None:
        return Rejected(where, "empty text")
    group_key = pick(record, GROUP_KEYS)
    image = path.parent / str(record[image_key]).strip()
    return Row(where, text, clean_group(record.get(group_key)) if group_key else None, image.read_bytes, str(image))


def read_jsonl(file: str) -> Iterator[Row | Rejected]:
    path = Path(file)
    for n, text, cause in _lines(path):
        if text is None:
            yield Rejected(Where(file, n), cause or "unreadable line")
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield Rejected(Where(file, n), f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            yield Rejected(Where(file, n), f"expected a JSON object, got {type(record).__name__}")
            continue
        yield _row(path, n, record)


def _delimited(file: str, delimiter: str) -> Iterator[Row | Rejected]:
    path = Path(file)
    header: list[str] | None = None
    for n, text, cause in _lines(path):
        if text is None:
            if header is None:
                raise ValueError(f"{file}:{n}: the header line is {cause}")
            yield Rejected(Where(file, n), cause or "unreadable line")
            continue
        if not text.strip():
            continue
        cells = next(csv.reader([text], delimiter=delimiter))
        if header is None:
            header = [c.strip() for c in cells]
            if pick(dict.fromkeys(header), IMAGE_KEYS) is None or pick(dict.fromkeys(header), TEXT_KEYS) is None:
                raise ValueError(f"{file}:{n}: the header must name an image column ({', '.join(IMAGE_KEYS)}) "
                                 f"and a text column ({', '.join(TEXT_KEYS)}); got {header}")
            continue
        if len(cells) != len(header):
            yield Rejected(Where(file, n), f"expected {len(header)} columns, got {len(cells)}")
            continue
        yield _row(path, n, dict(zip(header, cells)))


def read_csv(file: str) -> Iterator[Row | Rejected]:
    return _delimited(file, ",")


def read_tsv(file: str) -> Iterator[Row | Rejected]:
    return _delimited(file, "\t")
