"""Evaluation embedding across torch.distributed ranks (gloo, CPU), in items/s (issue 23: 2 ranks >= 1.6x one).

A tiny retriever (``--family dual``: tests/fixtures/models.py; ``--family vlm``: a random 2-layer Qwen2-VL with
LoRA, tests/vlm_tiny.py) embeds the same items (a third text only, a third
image only, a third both; images 48..112 px, decoded and preprocessed in the process as evaluation
does) through ``rare.evaluate.embed.embed`` in three setups, each started fresh with an empty cache:

- 1 rank with 1 torch thread (the reference);
- 2 ranks with 1 torch thread each (the figure with the target);
- 1 rank with 2 torch threads: the same two cores given to one process, for comparison (information).

Each rank is a process launched with torchrun's environment variables; the time is rank 0's, from a
barrier after every rank has loaded the model to the end of ``embed`` (shards written and the entry
assembled). Each setup runs ``repeats`` times, alternating, and its best run counts (other processes'
load only adds time). On a machine with fewer free cores than ranks the ratio says so.

Run: ``python -m bench ranks [--quick]`` or ``python bench/ranks_bench.py [--quick] [--family vlm]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import print_rows, row  # noqa: E402

SETUPS = {"1 rank x 1 thread": (1, 1), "2 ranks x 1 thread": (2, 1), "1 rank x 2 threads": (1, 2)}


def _items(root: Path, n: int) -> list[dict[str, Any]]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    words = "a red circle on a blue square beside the green triangle of an encyclopedia passage".split()
    (root / "img").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        text = " ".join(rng.choice(words, size=int(rng.integers(3, 30)))) if i % 3 != 1 else ""
        image = None
        if i % 3 != 0:
            image = f"img/{i}.png"
            w, h = (int(v) for v in rng.integers(48, 112, size=2))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / image)
        items.append({"id": f"1:{i}", "text": text, "image": image})
    return items


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, threads: int, work: Path, cache: Path, shard_rows: int) -> float:
    port, procs = _port(), []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(work), "--cache", str(cache),
               "--threads", str(threads), "--shard-rows", str(shard_rows)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = [p.communicate(timeout=1800)[0].decode() for p in procs]
    for p, out in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"rank failed ({p.returncode}):\n{out[-3000:]}")
    return json.loads(outs[0].strip().splitlines()[-1])["seconds"]


def worker(work: Path, cache: Path, threads: int, shard_rows: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from rare.evaluate import embed
    from rare.evaluate.ranks import join_from_env
    from rare.model import load_retriever

    ranks, device = join_from_env("cpu")
    retriever = load_retriever(work / "model")
    items = [embed.EmbedInput(**it) for it in json.loads((work / "items.json").read_text())]
    ranks.barrier()
    t0 = time.perf_counter()
    embed.embed(retriever, lambda: items, "bench", cache, work, batch_size=32, shard_rows=shard_rows, device=device)
    print(json.dumps({"rank": ranks.rank, "seconds": time.perf_counter() - t0}), flush=True)


def _tiny_vlm(out: Path) -> None:
    """A tiny random Qwen2-VL (tests/vlm_tiny.py) with LoRA, exported merged as ``rare train`` exports it."""
    import torch
    import transformers

    from rare.config.train import ModelParams
    from rare.model import build_retriever, save_retriever
    from tests.vlm_tiny import save_tiny

    transformers.utils.logging.set_verbosity_error()
    base = save_tiny(out.parent / "vlm-base", "qwen2_vl")
    torch.manual_seed(0)
    vlm = {"model": {"pretrained": str(base)}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    save_retriever(build_retriever(ModelParams(family="vlm", vlm=vlm)), out)


def _tiny_dual(out: Path) -> None:
    from tests.fixtures.models import make_tiny_retriever

    make_tiny_retriever(out)


FAMILIES = {"dual": (_tiny_dual, 12288), "vlm": (_tiny_vlm, 2304)}  # items per run: each setup 5 s or more, so the
# fixed costs (barrier, last shard, the entry assembled) do not stand in for the embedding rate


def run(quick: bool = False, family: str = "dual") -> list[dict[str, Any]]:
    make, n = FAMILIES[family]
    n, repeats = (384, 1) if quick else (n, 3)
    shard_rows = 64 if quick else 128
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make(work / "model")
        (work / "items.json").write_text(json.dumps(_items(work, n)))
        best = {name: float("inf") for name in SETUPS}
        for r in range(repeats):
            for name, (world, threads) in SETUPS.items():
                seconds = _launch(world, threads, work, work / f"cache-{r}-{world}-{threads}", shard_rows)
                best[name] = min(best[name], seconds)
        rate = {name: n / s for name, s in best.items()}
    ref = rate["1 rank x 1 thread"]
    return [
        row(f"items/s, {family}: 2 gloo ranks x 1 thread vs 1 rank x 1 thread ({n} items, {os.cpu_count()} cpus)",
            rate["2 ranks x 1 thread"], ref, "it/s", 1.6, better="higher"),
        row("items/s, 1 rank x 2 threads vs 1 rank x 1 thread (the same cores, one process)",
            rate["1 rank x 2 threads"], ref, "it/s", None, better="higher"),
        row("items/s, 2 gloo ranks x 1 thread vs 1 rank x 2 threads",
            rate["2 ranks x 1 thread"], rate["1 rank x 2 threads"], "it/s", None, better="higher"),
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--family", choices=sorted(FAMILIES), default="dual", help="the tiny retriever to embed with")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--shard-rows", type=int, default=128, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.cache, args.threads, args.shard_rows)
    else:
        print_rows(run(quick=args.quick, family=args.family))
