"""Tables of image bytes and text: a Parquet file, or a Hugging Face ``datasets`` folder saved to disk.

Both are read with pyarrow in record batches, so memory stays at one batch. A ``save_to_disk`` folder
holds Arrow stream files listed in its ``state.json`` (a ``DatasetDict`` folder lists its splits in
``dataset_dict.json``); reading them needs no ``datasets`` install. The image column may hold bytes,
``datasets``' Image struct ``{bytes, path}``, or a path relative to the file. "Line" in a message is the
row number in the table (1-based).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from rare.ingest.rows import GROUP_KEYS, IMAGE_KEYS, TEXT_KEYS, Rejected, Row, Where, clean_group, clean_text, pick

BATCH_ROWS = 256


def _image(value: Any, base: Path) -> tuple[Any, str] | None:
    """(bytes loader, name) for an image cell, or None when it holds no image."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return (lambda: data), str(path or "image bytes")
        value = path
    if isinstance(value, (bytes, bytearray)) and value:
        return (lambda: bytes(value)), "image bytes"
    if isinstance(value, str) and value.strip():
        p = base / value.strip()
        return p.read_bytes, str(p)
    return None


def _rows(file: str, batches: Iterable[pa.RecordBatch], base: Path, first_line: int = 1) -> Iterator[Row | Rejected]:
    line = first_line - 1
    keys: tuple[str | None, str | None, str | None] | None = None
    for batch in batches:
        if keys is None:
            names = dict.fromkeys(batch.schema.names)
            keys = (pick(names, IMAGE_KEYS), pick(names, TEXT_KEYS), pick(names, GROUP_KEYS))
            if keys[0] is None or keys[1] is None:
                raise ValueError(f"{file}: needs an image column ({', '.join(IMAGE_KEYS)}) and a text column "
                                 f"({', '.join(TEXT_KEYS)}); its columns are {batch.schema.names}")
        image_key, text_key, group_key = keys
        cols = {k: batch.column(k).to_pylist() for k in (image_key, text_key, group_key) if k}
        for i in range(batch.num_rows):
            line += 1
            where = Where(file, line)
            image = _image(cols[image_key][i], base)
            if image is None:
                yield Rejected(where, "no image in the row")
                continue
            text = clean_text(cols[text_key][i])
            if text is None:
                yield Rejected(where, "empty text")
                continue
            group = clean_group(cols[group_key][i]) if group_key else None
            yield Row(where, text, group, image[0], image[1])


def read_parquet(file: str) -> Iterator[Row | Rejected]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(file)
    yield from _rows(file, pf.iter_batches(batch_size=BATCH_ROWS), Path(file).parent)


def _stream_batches(path: Path) -> Iterator[pa.RecordBatch]:
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:  # an Arrow file (random-access format) rather than a stream
            source.seek(0)
            f = pa.ipc.open_file(source)
            yield from (f.get_batch(i) for i in range(f.num_record_batches))
            return
        yield from reader


def hf_arrow_files(folder: Path) -> list[Path]:
    """The Arrow files of a ``save_to_disk`` folder, in order (every split of a DatasetDict)."""
    dd = folder / "dataset_dict.json"
    if dd.is_file():
        splits = json.loads(dd.read_text(encoding="utf-8")).get("splits", [])
        return [f for s in splits for f in hf_arrow_files(folder / s)]
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    return [folder / f["filename"] for f in state.get("_data_files", [])]


def read_hf(folder: str) -> Iterator[Row | Rejected]:
    for path in hf_arrow_files(Path(folder)):
        yield from _rows(str(path), _stream_batches(path), path.parent)
