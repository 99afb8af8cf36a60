"""`rare import` throughput against decoding the same images alone with Pillow, in the same run.

8,000 JPEGs (256x256, photo-like: smooth gradients plus noise) and a captions JSONL are written to a temp
folder. Reference: ``Image.open(path).load()`` over every file (the least any import that checks its images
must do). Measured: ``import_root`` of the captions file into a fresh root: read, hash, dedupe, decode,
hard-link the image files under the root, split, write the records and validate them; then, for information,
without that final validation (``--no-validate``) and with copies instead of links (``--copy``: a new file
costs about as much as a decode on some file systems). All run three times, alternately,
after a warm-up read of every file (page cache); the best of each counts. ratio = import rate / decode
rate. Target (issue 26): >= 0.8.

Run: `python bench/import_bench.py [--quick]` (quick: 1,000 images), or `run(quick)` from the bench suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import print_rows, row


def make_images(folder: Path, n: int, size: int = 256) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    lines = []
    for i in range(n):
        base = (np.stack([xx * (i % 7 + 1), yy * (i % 5 + 1), (xx + yy) * (i % 3 + 1)], -1) // 4) % 256
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
        lines.append(json.dumps({"image": f"{i:05d}.jpg", "text": f"a smooth colour field number {i}",
                                 "group": f"g{i // 4}"}))
    captions = folder / "captions.jsonl"
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return captions


def decode_all(files: list[Path]) -> float:
    start = time.perf_counter()
    for f in files:
        with Image.open(f) as img:
            img.load()
    return time.perf_counter() - start


def import_once(captions: Path, out: Path, validate: bool = True, link: bool = True) -> float:
    from rare.ingest import ImportOptions, Source, import_root

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = import_root([Source("bench", captions)], out, ImportOptions(validate=validate, link=link))
    seconds = time.perf_counter() - start
    assert not result.rejected, result.rejected[:3]
    return seconds


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 1000 if quick else 8000
    with tempfile.TemporaryDirectory(prefix="rare-import-bench-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        captions = make_images(src, n)
        files = sorted(src.glob("*.jpg"))
        for f in files:  # warm the page cache for both sides
            f.read_bytes()
        decode_s, import_s, bare_s, copy_s = [], [], [], []
        for _ in range(3):  # this shared host's speed drifts by 30 % within a minute
            decode_s.append(decode_all(files))
            import_s.append(import_once(captions, Path(tmp) / "root"))
            bare_s.append(import_once(captions, Path(tmp) / "root", validate=False))
            copy_s.append(import_once(captions, Path(tmp) / "root", link=False))
    decode_rate = n / min(decode_s)
    print(f"decode alone: {decode_s} s; import: {import_s} s; import --no-validate: {bare_s} s; "
          f"import --copy: {copy_s} s ({n} images)", flush=True)
    return [row(f"import {n} JPEGs 256px: images/s vs Pillow decode alone", n / min(import_s), decode_rate,
                "img/s", 0.8, better="higher"),
            row(f"import {n} JPEGs 256px, --no-validate: images/s vs Pillow decode alone", n / min(bare_s),
                decode_rate, "img/s", None, better="higher"),
            row(f"import {n} JPEGs 256px, --copy: images/s vs Pillow decode alone", n / min(copy_s),
                decode_rate, "img/s", None, better="higher")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 images instead of 8,000")
    print_rows(run(parser.parse_args().quick))
