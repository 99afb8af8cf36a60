"""The one reader for every line-oriented input: JSONL, qrels, TREC run files, the instructions TSV.

One rule for all of them, so no file type can drift: UTF-8 with an optional BOM, LF or CRLF line
ends, and a byte that is not UTF-8 becomes ``file:line: not valid UTF-8 (byte 0x.. at column N)``
instead of a traceback. Typed checks of the fields live with each format; the helpers at the end
are the strict ones they share (a JSON ``true`` is not the integer 1).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rare.data.input_error import DataError

OnError = Callable[[DataError], None]


def decode_line(raw: bytes, path: str | Path, lineno: int) -> str:
    """One line as text without its line end; the first line loses a UTF-8 BOM."""
    if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(raw[:exc.start].decode("utf-8", errors="replace")) + 1
        raise DataError(path, lineno, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column})") from None
    return text.rstrip("\r\n")


def iter_lines(path: str | Path, on_error: OnError | None = None) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) for every non-blank line.

    A line that cannot be decoded raises, or, with ``on_error``, is reported there and skipped, so
    a checker can list every bad line of a file in one pass.
    """
    path = Path(path)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, None, "is a directory, not a file") from None
    except OSError as exc:
        raise DataError(path, None, f"cannot be read ({exc.strerror or exc})") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = decode_line(raw, path, lineno)
            except DataError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                continue
            if text.strip():
                yield lineno, text


def strict_int(value: Any) -> bool:
    """An integer, and not a bool (``isinstance(True, int)`` holds in Python, not in the formats)."""
    return isinstance(value, int) and not isinstance(value, bool)


def int_field(text: str) -> int | None:
    """A text column as a plain decimal integer (no sign, no spaces, ASCII digits only), else None."""
    return int(text) if text.isascii() and text.isdigit() else None
