"""The M-BEIR global pool from disk: 5.6M x 768 fp16 random unit vectors, 10,000 queries (issue 8, target 2).

The 8.6 GB .npy is written in chunks to a temporary directory (free disk is checked first) and
deleted afterwards. Rows: peak resident memory while searching it (target <= 12 GiB on a 24 GiB
machine; the search streams candidate chunks with plain reads, so it stays near one chunk plus one
score block) and the search throughput against a plain large fp32 matmul.

Run: `python bench/global_pool_bench.py [--quick] [--dir DIR]` (quick: 560k candidates, 1,000 queries),
or `run(quick)` from a bench suite. The full run takes a long time on 2 cores (86 TFLOP of scoring).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/global_pool_bench.py` from anywhere

from bench.common import print_rows, row  # noqa: E402
from bench.search_bench import matmul_gflops  # noqa: E402
from rare.evaluate.search import search  # noqa: E402

GIB = 2**30


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class PeakRSS:
    """Samples this process's resident memory every 50 ms while active."""

    def __init__(self) -> None:
        self.peak, self._stop = rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def write_pool(path: Path, n: int, d: int, chunk: int = 131_072) -> None:
    """Random unit rows as fp16, written chunk by chunk into a preallocated .npy (never all in memory)."""
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
    for a in range(0, n, chunk):
        x = rng.random((min(chunk, n - a), d), dtype=np.float32) - 0.5
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[a:a + len(x)] = x
        out.flush()
    del out


def run(quick: bool = False, workdir: str | None = None) -> list[dict[str, Any]]:
    n, d, nq, k = (560_000, 768, 1_000, 10) if quick else (5_609_079, 768, 10_000, 10)
    need = n * d * 2
    tmp = Path(tempfile.mkdtemp(prefix="global-pool-bench-", dir=workdir))
    try:
        free = shutil.disk_usage(tmp).free
        if free < need + 2 * GIB:
            raise RuntimeError(f"{tmp}: {free / GIB:.1f} GiB free, the pool needs {need / GIB:.1f} GiB + 2 GiB margin")
        pool = tmp / "pool.npy"
        start = time.perf_counter()
        write_pool(pool, n, d)
        write_s = time.perf_counter() - start
        rng = np.random.default_rng(1)
        queries = rng.standard_normal((nq, d), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        before = rss_bytes()
        with PeakRSS() as peak:
            start = time.perf_counter()
            scores, rows = search(queries, pool, k)
            search_s = time.perf_counter() - start
        assert rows.shape == (nq, k) and (rows >= 0).all() and (np.diff(scores, axis=1) <= 0).all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gflops = 2.0 * n * nq * d / search_s / 1e9
    limit = matmul_gflops()
    size = f"{n / 1e6:.2f}M x {d} fp16 ({need / GIB:.1f} GiB on disk), {nq} queries"
    return [
        row(f"global pool {size}: peak RSS while searching (GiB)", peak.peak / GIB, 12.0, "GiB", 1.0),
        row("  RSS before the search (GiB)", before / GIB, 12.0, "GiB", None),
        row(f"  search throughput (queries/s) vs the plain-matmul limit ({limit:.0f} GFLOP/s)", nq / search_s,
            limit * 1e9 / (2.0 * n * d), "q/s", None, better="higher"),
        row("  search GFLOP/s vs the best plain 4096^3 fp32 matmul (MKL, OpenBLAS, oneDNN)", gflops, limit, "GF/s",
            None, better="higher"),
        row("  writing the pool to disk (GB/s)", need / write_s / 1e9, 1.0, "GB/s", None, better="higher"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="560k candidates and 1,000 queries")
    parser.add_argument("--dir", default=None, help="where to write the temporary pool (default: the system temp dir)")
    args = parser.parse_args()
    print_rows(run(args.quick, args.dir))
