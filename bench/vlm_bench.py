"""The ``vlm`` family's training step on CPU (tiny random Qwen2-VL from a config, tests/vlm_tiny.py):

    python -m bench.vlm_bench [--quick] [--batch 32] [--chunk 16] [--threads 1] [--clock cpu]

(1) a GradCache step against the plain step at the same global batch (``--batch`` pairs, GradCache chunks of
    ``--chunk`` entries per side). GradCache embeds every chunk once more without a graph (all but the last
    candidate chunk, whose first pass keeps its graph), so (2F+B)/(F+B) ~ 1.33x is about its floor; target
    <= 1.4x. The chunk is stated because the tiny model makes it matter: one call of the 2-layer model costs
    ~7 ms (no graph) / ~18 ms (with its backward) of Python and per-op dispatch (peft's LoRA wrappers,
    transformers' masks and rotary embedding) whatever its size, so a chunk of a few entries measures that
    per-call cost, not GradCache. The default chunk (16) is large enough for per-entry compute to dominate that
    fixed cost, as it does for a real model's chunk on a GPU (32 pairs: 2 chunks a side; ``--batch 64`` gives 4 a
    side, where the tiny model pays its per-call cost twice as often); an informative row shows ``--chunk // 2``.
(2) the Lightning loop (rare's RetrieverModule, as `rare train` runs it) against a plain torch loop doing the
    same step; target >= 0.95x in samples/s.
Rounds are interleaved so background load hits both sides alike; medians of per-step times. On a shared machine
``--threads 1 --clock cpu`` times each step by its own CPU seconds, which waiting for a core does not inflate.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from rare import runtime

runtime.configure()

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import print_rows, row  # noqa: E402
from rare.config.train import ModelParams, OptimParams  # noqa: E402
from rare.model import EncodeInput, build_retriever  # noqa: E402
from rare.train.gradcache import grad_cache_step  # noqa: E402
from rare.train.loss import contrastive_loss  # noqa: E402
from rare.train.module import RetrieverModule  # noqa: E402
from tests.vlm_tiny import save_tiny  # noqa: E402

WARMUP = 1
# Wall time, or this process's CPU time (``--clock cpu``): with one thread the step's own CPU seconds, which time
# spent waiting for a core on a shared machine does not inflate.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]
OPTIM = OptimParams(lr=1e-4, lr_new=None, weight_decay=0.0, warmup_steps=0)


def _batch(retriever: Any, size: int) -> dict[str, dict[str, torch.Tensor]]:
    rng = np.random.RandomState(0)

    def image(i: int) -> Image.Image:
        return Image.fromarray((rng.rand(56 + 28 * (i % 2), 84, 3) * 255).astype("uint8"))

    col = retriever.collator()
    queries = [EncodeInput(f"Find the photo. a red circle number {i}", image(i) if i % 2 else None) for i in range(size)]
    cands = [EncodeInput(f"A red circle {i}." if i % 3 else "", image(i + 1)) for i in range(size)]
    return {"query": col(queries), "cand": col(cands)}


def _retriever(base: Path) -> Any:
    torch.manual_seed(0)
    vlm = {"model": {"pretrained": str(base)}, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    return build_retriever(ModelParams(family="vlm", vlm=vlm))


def plain_steps(module: RetrieverModule, batch: dict, steps: int, chunk: int | None) -> list[float]:
    """The step written out: plain (embed, loss, backward) or GradCache, then AdamW."""
    r = module.retriever
    module.train()  # as Lightning's fit does
    opt = module.configure_optimizers()["optimizer"]
    times = []
    for _ in range(WARMUP + steps):
        t0 = clock()
        opt.zero_grad(set_to_none=True)
        if chunk is None:
            contrastive_loss(r(batch["query"]), r(batch["cand"]), r.scale()).backward()
        else:
            grad_cache_step(r, batch["query"], batch["cand"], lambda q, c: contrastive_loss(q, c, r.scale()), chunk,
                            r.split, prepare=r.frozen_features, loss_params=r.scale)
        opt.step()
        times.append(clock() - t0)
    return times[WARMUP:]


def lightning_steps(module: RetrieverModule, batch: dict, steps: int) -> list[float]:
    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_start(self, *args: Any) -> None:
            self.start = clock()

        def on_train_batch_end(self, *args: Any) -> None:
            self.ends.append(clock() - self.start)

    timer = Clock()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=WARMUP + steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    loader = torch.utils.data.DataLoader([batch] * (WARMUP + steps), batch_size=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=loader)
    return timer.ends[WARMUP:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    ap.add_argument("--batch", type=int, default=32, help="pairs per step (the global batch)")
    ap.add_argument("--chunk", type=int, default=16, help="GradCache chunk (entries per sub-batch)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's own); 1 keeps a shared machine's contention out of "
                         "the many small ops of a chunked step")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (use with --threads 1 on a shared machine)")
    args = ap.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    steps, rounds = (3, 2) if args.quick else (5, 4)
    torch.set_num_threads(args.threads or max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="vlm-bench-") as tmp:
        base = save_tiny(Path(tmp) / "ckpt", "qwen2_vl")
        r = _retriever(base)
        batch = _batch(r, args.batch)
        plain, cached, small, light, loop = [], [], [], [], []
        for i in range(rounds):
            plain += plain_steps(RetrieverModule(_retriever(base), OPTIM, 100), batch, steps, None)
            cached += plain_steps(RetrieverModule(_retriever(base), OPTIM, 100), batch, steps, args.chunk)
            small += plain_steps(RetrieverModule(_retriever(base), OPTIM, 100), batch, steps, args.chunk // 2)
            pair = [lambda: loop.extend(plain_steps(RetrieverModule(_retriever(base), OPTIM, 100), batch, steps, None)),
                    lambda: light.extend(lightning_steps(RetrieverModule(_retriever(base), OPTIM, 100), batch, steps))]
            for side in pair[::1 if i % 2 else -1]:  # alternate which of the two runs first
                side()
    p = statistics.median(plain)
    lp, lt = statistics.median(loop), statistics.median(light)
    n, c = args.batch, args.chunk
    print_rows([
        row(f"vlm GradCache step (chunks of {c}) vs plain step, batch {n} pairs (s/step)",
            statistics.median(cached), p, "s", 1.4),
        row(f"vlm GradCache step (chunks of {c // 2}: per-call overhead) vs plain step, batch {n} pairs (s/step)",
            statistics.median(small), p, "s", None),
        row(f"vlm Lightning loop vs plain loop, batch {n} pairs (samples/s)", n / lt, n / lp, "smp/s", 0.95,
            better="higher"),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
