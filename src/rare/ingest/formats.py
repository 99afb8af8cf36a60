"""The input formats ``rare import`` reads: one row per format, with how a path is recognised."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rare.ingest import captions, folder, tables, webdataset
from rare.ingest.rows import Reader


@dataclass(frozen=True)
class Format:
    name: str
    reader: Reader
    matches: Callable[[Path], bool]
    describes: str  # for the list of what is accepted


def _suffix(*suffixes: str) -> Callable[[Path], bool]:
    return lambda p: p.is_file() and p.suffix.lower() in suffixes


def _hf_folder(p: Path) -> bool:
    return p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file())


def _shards(p: Path) -> bool:
    return (p.is_file() and p.name.lower().endswith((".tar", ".tar.gz", ".tgz"))) or (
        p.is_dir() and any(p.glob("*.tar")))


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("csv", captions.read_csv, _suffix(".csv"), "captions CSV (.csv)"),
    Format("tsv", captions.read_tsv, _suffix(".tsv", ".tab"), "captions TSV (.tsv)"),
    Format("jsonl", captions.read_jsonl, _suffix(".jsonl", ".ndjson"), "captions JSON lines (.jsonl)"),
    Format("parquet", tables.read_parquet, _suffix(".parquet", ".pq"), "Parquet (.parquet)"),
    Format("hf", tables.read_hf, _hf_folder, "a Hugging Face datasets folder (save_to_disk)"),
    Format("webdataset", webdataset.read_webdataset, _shards, "WebDataset shards (.tar, or a folder of them)"),
    Format("folder", folder.read_folder, folder.matches, "a folder holding a captions file (captions.csv/tsv/jsonl, "
           "metadata.jsonl/csv) or images with .txt sidecars"),
)}


def accepted() -> str:
    return "; ".join(f"{f.name}: {f.describes}" for f in FORMATS.values())


def detect_format(path: Path, given: str | None = None) -> Format:
    """The format ``given`` by name, or the one whose rule matches ``path``; else one error naming what it is."""
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if given is not None:
        if given not in FORMATS:
            raise ValueError(f"{path}: unknown format {given!r}; rare import reads {accepted()}")
        return FORMATS[given]
    for fmt in FORMATS.values():
        if fmt.matches(path):
            return fmt
    what = (f"a folder holding none of: {folder.looked_for()}, a datasets state.json or dataset_dict.json, "
            f".tar shards") if path.is_dir() else f"format {path.suffix or path.name!r}"
    raise ValueError(f"{path}: unsupported input ({what}); rare import reads {accepted()}")
