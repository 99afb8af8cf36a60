"""A folder given without naming its captions file: the captions file inside it, or a caption beside each image.

Looked for in this order (the first that is there wins):
  1. a captions file at the folder's top: ``captions.{csv,tsv,jsonl}``, or Hugging Face imagefolder's
     ``metadata.{jsonl,csv}`` (its ``file_name`` column is an image column); read as that file would be;
  2. sidecars, as WebDataset and imagefolder keep them: ``x.jpg`` (any image suffix below) with ``x.txt``
     beside it, in the folder or its subfolders. An image without its ``.txt`` is a rejected row; the row's
     place is the ``.txt`` file (line 1), or the image when there is no text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from rare.ingest import captions
from rare.ingest.rows import Rejected, Row, Where, clean_text

CAPTION_FILES: dict[str, Callable[[str], Iterator[Row | Rejected]]] = {
    "captions.csv": captions.read_csv,
    "captions.tsv": captions.read_tsv,
    "captions.jsonl": captions.read_jsonl,
    "metadata.jsonl": captions.read_jsonl,
    "metadata.csv": captions.read_csv,
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def captions_file(folder: Path) -> Path | None:
    return next((folder / n for n in CAPTION_FILES if (folder / n).is_file()), None)


def _images(folder: Path) -> list[Path]:
    """Every image under ``folder`` in path order (hidden folders, such as .cache, are skipped)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def has_sidecars(folder: Path) -> bool:
    return any(p.with_suffix(".txt").is_file() for p in _images(folder))


def matches(path: Path) -> bool:
    return path.is_dir() and (captions_file(path) is not None or has_sidecars(path))


def looked_for() -> str:
    """What a folder must hold, for the error naming a folder that holds none of it."""
    return (f"a captions file ({', '.join(CAPTION_FILES)}) or images ({', '.join(IMAGE_SUFFIXES)}) "
            "with a .txt beside each")


def _sidecar(image: Path) -> Row | Rejected:
    txt = image.with_suffix(".txt")
    if not txt.is_file():
        return Rejected(Where(str(image), 1), f"no caption: {txt.name} is not beside it")
    where = Where(str(txt), 1)
    try:
        text = clean_text(txt.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        return Rejected(where, f"not valid UTF-8 (byte at offset {exc.start})")
    if text is None:
        return Rejected(where, "empty text")
    return Row.from_file(where, text, None, image)


def read_folder(path: str) -> Iterator[Row | Rejected]:
    folder = Path(path)
    found = captions_file(folder)
    if found is not None:
        yield from CAPTION_FILES[found.name](str(found))
        return
    for image in _images(folder):
        yield _sidecar(image)
