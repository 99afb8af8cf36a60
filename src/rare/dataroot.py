"""The data root `rare data` writes (``rare.stages.data``): the embedded benchmark generated into a fresh
directory, or a pointer to a real M-BEIR root (``data.source: mbeir``), either way validated.

The output is written to a temporary sibling and renamed into place only once it is whole and valid,
so a killed run never leaves half a dataset where later stages would read it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rare.atomic import swap_in
from rare.config import ConfigError
from rare.config.data import DataParams
from rare.data.layout import POINTER_FILE
from rare.validate import print_report, validate_root


def generate_checked(tmp: Path, params: DataParams) -> dict[str, Any]:
    """The benchmark's manifest. Images were just written by us; records, pools and qrels are what can go wrong."""
    from rare.benchmark import generate

    manifest = generate(tmp, params)
    report = validate_root(tmp, check_images=False)
    if report.errors:
        raise ValueError(f"generated benchmark is invalid ({len(report.errors)} errors), first: {report.errors[0]}")
    return manifest


def point_at(tmp: Path, root: Path) -> dict[str, Any]:
    """Real M-BEIR (169 GB) is never copied: validate its records and leave a pointer to it.

    The pointer lists each JSONL/TSV/qrels file with its size and mtime, so the stage's DVC output
    (and everything downstream) changes when the external data does; `dvc repro -f data` re-checks it.
    """
    report = validate_root(root, check_images=False)
    if report.errors:
        print_report(report)
        raise ValueError(f"{root}: M-BEIR root is invalid ({len(report.errors)} errors), first: {report.errors[0]}")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".jsonl", ".tsv", ".txt")
                   and "mbeir_images" not in p.relative_to(root).parts)
    pointer = {"root": str(root.resolve()),
               "files": {str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}
    tmp.mkdir(parents=True)
    (tmp / POINTER_FILE).write_text(json.dumps(pointer, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return {"counts": report.counts, "files": len(files)}


def build_data_root(out: Path, params: DataParams, params_file: Path,
                    log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Write the data root at ``out`` (replacing what is there); the benchmark's manifest, or None for a
    pointer to real M-BEIR. ``log`` takes the one summary line (the stage's run logger; default: ``rare``'s)."""
    log = log or logging.getLogger("rare").info
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run: ours by name
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    start = time.perf_counter()
    try:
        if params.source == "mbeir":
            root = Path(params.mbeir_root or "")
            if not root.is_dir():
                raise ConfigError(f"{params_file}: data.mbeir_root: {root} is not a directory")
            summary = point_at(tmp, root)
            swap_in(tmp, out)
            log(f"M-BEIR root {root}: {summary['counts']} in {summary['files']} files; pointer at {out}")
            return None
        manifest = generate_checked(tmp, params)
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = manifest["counts"]
    log(f"embedded benchmark ({params.preset}, seed {params.seed}) at {out}: "
                            f"{counts['global_pool']} candidates, {counts['union_train']} train queries, "
                            f"{sum(r['test'] for r in counts['dataset_tasks'].values())} test queries, "
                            f"{counts['images']} images in {time.perf_counter() - start:.1f} s")
    return manifest
