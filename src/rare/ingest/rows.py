"""What a reader hands the builder: a row (image bytes, text, group) or a rejection, each with its place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Where:
    """The place of a row in the user's files: a line of a captions file, a row of a table, a sample of a shard."""

    file: str
    line: int
    key: str | None = None  # a WebDataset sample's key, to find it inside the shard

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" + (f" ({self.key})" if self.key else "")


@dataclass(frozen=True)
class Row:
    where: Where
    text: str
    group: str | None
    image: Callable[[], bytes]  # read lazily: a missing or unreadable image rejects the row, not the import
    image_name: str  # for messages: the path or member the bytes come from
    source: Path | None = None  # the plain file the bytes are, where they are one: the import may hard-link it

    @classmethod
    def from_file(cls, where: Where, text: str, group: str | None, image: Path) -> Row:
        return cls(where, text, group, image.read_bytes, str(image), image)


@dataclass(frozen=True)
class Rejected:
    where: Where
    cause: str

    def __str__(self) -> str:
        return f"{self.where}: {self.cause}"


Reader = Callable[[str], Iterator["Row | Rejected"]]  # a path -> its rows in file order

# Column names readers accept for each field (the first that is present wins).
IMAGE_KEYS = ("image", "image_path", "img_path", "file", "file_name", "filename", "path", "jpg", "png")
TEXT_KEYS = ("text", "caption", "txt", "description", "title")
GROUP_KEYS = ("group", "group_id", "entity", "entity_id")


def pick(record: dict, keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` present in ``record`` (column names compared case-insensitively)."""
    lower = {str(k).lower(): k for k in record}
    for k in keys:
        if k in lower:
            return lower[k]
    return None


def clean_text(value: object) -> str | None:
    """A row's text as stored: stripped, one line; None when there is none (the row is then rejected)."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def clean_group(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
