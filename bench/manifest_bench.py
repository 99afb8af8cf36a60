"""What checking artifacts against their manifests costs, against the read it guards (issue 25).

Two artifacts, each at the embedded default's size and at M-BEIR's (5.6M-row pool):
- an embedding cache entry (``vectors.npy`` fp16 [N, D] + ``ids.npy``), checked on every open by sizes,
  .npy headers and the sha256 of ``ids.npy``; the reference is what an evaluation or ``rare serve`` then
  does with it: load the ids and read every vector once (an exact search scans them all);
- the stored enhancement shards of a pool (``shard_size`` 1024 lines): before reuse, sizes and the stats
  file's hash; then assembly hashes each output as it streams it into the published pool file. The
  reference is the same assembly without hashing.
Also the one-time cost of writing the manifests (hashing what was just written).

Files are written to a temporary directory and deleted. The page cache is warm for both sides of each
ratio (the check reads the same files right before the reference does). Run:
`python bench/manifest_bench.py [--quick] [--dim D] [--dir DIR]` (quick: 560k rows).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/manifest_bench.py` from anywhere

from bench.common import print_rows, row  # noqa: E402
from rare.evaluate.embed import Embeddings  # noqa: E402
from rare.manifest import verify, write_folder_manifest, write_manifest  # noqa: E402

DEFAULT_ROWS, DEFAULT_DIM = 7_800, 384   # the embedded default's global pool, MiniLM's width
MBEIR_ROWS = 5_600_000
SHARD_LINES = 1024
LINE = json.dumps({"did": "9:1234567", "txt": "x" * 220, "img_path": "mbeir_images/x/000000001234.jpg",
                   "modality": "image,text", "src_content": None,
                   "enhanced": {"op": "refine", "status": "ok", "txt": "y" * 80, "cause": None}})


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_entry(folder: Path, rows: int, dim: int) -> float:
    """An embedding cache entry as ``embed`` writes it; returns the seconds its manifest took."""
    folder.mkdir(parents=True)
    out = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float16, shape=(rows, dim))
    rng = np.random.default_rng(0)
    for a in range(0, rows, 262_144):
        out[a:a + 262_144] = rng.standard_normal((min(262_144, rows - a), dim), dtype=np.float32)
    out.flush()
    del out
    np.save(folder / "ids.npy", np.array([f"9:{i}" for i in range(rows)], dtype=str), allow_pickle=False)
    (folder / "done").write_text("{}")
    return timed(lambda: write_folder_manifest(folder))


def read_entry(entry: Embeddings) -> None:
    ids = entry.ids()
    vectors = entry.vectors()
    total = 0.0
    for a in range(0, len(vectors), 65_536):
        total += float(np.asarray(vectors[a:a + 65_536], dtype=np.float32).sum())
    assert len(ids) == len(vectors) and total == total


def make_shards(folder: Path, rows: int) -> tuple[list[Path], float]:
    folder.mkdir(parents=True)
    line = (LINE + "\n").encode()
    manifests, hashing = [], 0.0
    for i, a in enumerate(range(0, rows, SHARD_LINES)):
        out, stats = folder / f"{i:07d}.jsonl", folder / f"{i:07d}.json"
        out.write_bytes(line * min(SHARD_LINES, rows - a))
        stats.write_text('{"items": 1024}')
        manifest = folder / f"{i:07d}.manifest.json"
        hashing += timed(lambda m=manifest, o=out, s=stats: write_manifest(m, [o, s]))
        manifests.append(manifest)
    return manifests, hashing


def read_shards(manifests: list[Path], dst: Path, hashed: bool = False) -> None:
    with open(dst, "wb") as fh:
        for m in manifests:
            h, lines = hashlib.sha256(), 0
            with open(m.with_name(m.name.replace(".manifest.json", ".jsonl")), "rb") as src:
                while chunk := src.read(1 << 20):
                    if hashed:
                        h.update(chunk)
                        lines += chunk.count(b"\n")
                    fh.write(chunk)


def measure(base: Path, label: str, rows: int, dim: int) -> list[dict[str, Any]]:
    entry_dir = base / f"entry-{label}"
    write_s = make_entry(entry_dir, rows, dim)
    entry = Embeddings(entry_dir)
    entry_bytes = sum(p.stat().st_size for p in entry_dir.iterdir())
    read_entry(entry)  # warm the page cache for both sides
    check_s = min(timed(entry.check) for _ in range(3))
    read_s = min(timed(lambda: read_entry(entry)) for _ in range(3))
    write_ref = timed(lambda: shutil.copyfile(entry_dir / "vectors.npy", base / "copy.npy"))
    (base / "copy.npy").unlink()
    shutil.rmtree(entry_dir)

    manifests, hash_s = make_shards(base / f"shards-{label}", rows)
    shard_bytes = sum(p.stat().st_size for p in (base / f"shards-{label}").glob("*.jsonl"))
    read_shards(manifests, base / "pool.jsonl")
    reuse_s = min(timed(lambda: [verify(m, full={m.name.replace(".manifest.json", ".json")}) for m in manifests])
                  for _ in range(2))
    hashed_s = min(timed(lambda: read_shards(manifests, base / "pool.jsonl", hashed=True)) for _ in range(2))
    assemble_s = min(timed(lambda: read_shards(manifests, base / "pool.jsonl")) for _ in range(2))
    shutil.rmtree(base / f"shards-{label}")
    (base / "pool.jsonl").unlink()
    what = f"{rows:,} rows x {dim} fp16 ({entry_bytes / 2**20:,.0f} MiB)"
    pool = f"{rows:,} rows in {len(manifests):,} shards ({shard_bytes / 2**20:,.0f} MiB)"
    return [
        row(f"manifest {label}: embedding entry open check vs reading it, {what}", check_s, read_s, "s", None),
        row(f"manifest {label}: embedding entry manifest write vs copying its vectors", write_s, write_ref, "s", None),
        row(f"manifest {label}: shard checks before reuse vs assembling the pool, {pool}", reuse_s, assemble_s,
            "s", None),
        row(f"manifest {label}: assembling the pool hashing every shard vs without", hashed_s, assemble_s, "s", None),
        row(f"manifest {label}: shard manifests written vs assembling the pool", hash_s, assemble_s, "s", None),
    ]


def run(quick: bool = False, dim: int = 64, directory: str | None = None) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="manifest-bench-", dir=directory) as tmp:
        rows = measure(Path(tmp), "default", DEFAULT_ROWS, DEFAULT_DIM)
        rows += measure(Path(tmp), "mbeir" if not quick else "mbeir/10", MBEIR_ROWS // (10 if quick else 1), dim)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="560k rows instead of 5.6M")
    ap.add_argument("--dim", type=int, default=64, help="width of the 5.6M-row vectors (768 for CLIP-L: 8.6 GB)")
    ap.add_argument("--dir", default=None, help="where to write the temporary files")
    args = ap.parse_args()
    print_rows(run(args.quick, args.dim, args.dir))


if __name__ == "__main__":
    main()
