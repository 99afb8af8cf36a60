"""A folder of images with a captions file (CSV, TSV or JSONL): image path, text, optional group id.

Each physical line is decoded on its own, so a line in a bad encoding rejects only the row holding it.
Image paths are relative to the captions file's folder (or absolute). CSV/TSV need a header line naming the
columns (``image``, ``text``, ``group``; see ``rows`` for the accepted synonyms) and follow
RFC 4180: a quoted field may span lines, and a row is named by the line it starts on.
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
    return Row.from_file(where, text, clean_group(record.get(group_key)) if group_key else None, image)


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


class _Physical:
    """A captions file's physical lines for ``csv.reader``, each decoded on its own: a line that is not UTF-8
    is read with replacement characters and remembered, so only the record holding it is rejected."""

    def __init__(self, path: Path):
        self.path = path
        self.bad: dict[int, str] = {}  # line number -> why it is unreadable

    def __iter__(self) -> Iterator[str]:
        with self.path.open("rb") as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    yield raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    self.bad[n] = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                    yield raw.decode("utf-8", errors="replace")


def _span(first: int, last: int) -> str:
    return "" if first == last else f" (lines {first}-{last}: a quoted field spans them)"


def _delimited(file: str, delimiter: str) -> Iterator[Row | Rejected]:
    """RFC 4180 records: a quoted field may hold delimiters, doubled quotes and line breaks. A record is
    named by its first physical line, so messages point where the row starts; the strict dialect makes a
    quote that never closes (or stray text after a closing quote) a rejected row, not a swallowed file."""
    path = Path(file)
    lines = _Physical(path)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    last = 0  # the physical line the previous record ended on
    while True:
        first = last + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            last = reader.line_num
            if header is None:
                raise ValueError(f"{file}:{first}: the header line is not valid CSV ({exc})") from None
            cause = (f"a quoted field opened here is never closed (it runs to line {last}, the end of the file)"
                     if "end of data" in str(exc) else f"malformed CSV ({exc}){_span(first, last)}")
            yield Rejected(Where(file, first), cause)
            continue
        if cells is None:
            return
        last = reader.line_num
        bad = next((n for n in range(first, last + 1) if n in lines.bad), None)
        if bad is not None:
            if header is None:
                raise ValueError(f"{file}:{bad}: the header line is {lines.bad[bad]}")
            yield Rejected(Where(file, first), lines.bad[bad] + ("" if bad == first else f" on line {bad}"))
            continue
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            if pick(dict.fromkeys(header), IMAGE_KEYS) is None or pick(dict.fromkeys(header), TEXT_KEYS) is None:
                raise ValueError(f"{file}:{first}: the header must name an image column ({', '.join(IMAGE_KEYS)}) "
                                 f"and a text column ({', '.join(TEXT_KEYS)}); got {header}")
            continue
        if len(cells) != len(header):
            yield Rejected(Where(file, first), f"expected {len(header)} columns, got {len(cells)}{_span(first, last)}")
            continue
        yield _row(path, first, dict(zip(header, cells)))


def read_csv(file: str) -> Iterator[Row | Rejected]:
    return _delimited(file, ",")


def read_tsv(file: str) -> Iterator[Row | Rejected]:
    return _delimited(file, "\t")
