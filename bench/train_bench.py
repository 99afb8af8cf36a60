"""Training throughput: the Lightning loop vs a plain torch loop on the same model, batch and data.

    python -m bench.train_bench [--quick]

Both loops run the embedded default retriever (params `train:` defaults) on the embedded
benchmark through the same DataModule, interleaved so background load hits both alike; one line
per figure: name, value, reference, ratio, verdict. Targets: Lightning >= 0.95x the plain loop;
the step waits on data <= 10% of the time; the loader alone delivers >= 3x what training consumes.
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

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from bench.common import print_rows, row  # noqa: E402
from rare.benchmark import generate  # noqa: E402
from rare.config.data import DataParams  # noqa: E402
from rare.config.train import TrainParams  # noqa: E402
from rare.data.layout import MBEIRRoot  # noqa: E402
from rare.model import build_retriever  # noqa: E402
from rare.train.datamodule import PairDataModule, TextSettings, resolve_inputs  # noqa: E402
from rare.train.module import RetrieverModule  # noqa: E402

WARMUP = 2


def _setup(root: Path, params: TrainParams) -> tuple[RetrieverModule, PairDataModule]:
    torch.manual_seed(params.seed)
    retriever = build_retriever(params.model)
    raw = MBEIRRoot(root)
    text = TextSettings(False, False, params.text_mode.query, params.text_mode.corpus, params.instruction_seed,
                        params.seed)
    dm = PairDataModule(raw, resolve_inputs(raw, params, None, None), text, params, retriever.collator())
    dm.setup("fit")
    return RetrieverModule(retriever, params.optim, total_steps=params.max_steps or 1), dm


def plain_loop(root: Path, params: TrainParams, steps: int) -> tuple[list[float], list[float]]:
    """The same step Lightning runs, written out: wall time per step, and the part spent waiting on data."""
    module, dm = _setup(root, params)
    opt = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    batches = iter(dm.train_dataloader())
    ends, waits = [], []
    for step in range(WARMUP + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        waits.append(time.perf_counter() - t0)
        loss = module.training_step(batch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ends.append(time.perf_counter())
    return _durations(ends), waits[WARMUP:]


def _durations(ends: list[float]) -> list[float]:
    """Step i's wall time = end(i) - end(i-1): data, compute and every hook in between."""
    return [b - a for a, b in zip(ends[WARMUP - 1:], ends[WARMUP:])]


class _Clock(pl.Callback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.ends.append(time.perf_counter())


def lightning_loop(root: Path, params: TrainParams, steps: int) -> list[float]:
    module, dm = _setup(root, params)
    clock = _Clock()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=WARMUP + steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False,
                         callbacks=[clock])
    trainer.fit(module, datamodule=dm)
    return _durations(clock.ends)


def loader_only(root: Path, params: TrainParams, steps: int) -> float:
    """What the data pipeline alone delivers (samples/s), with the training loader's settings."""
    _, dm = _setup(root, params)
    batches = iter(dm.train_dataloader())
    next(batches)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * params.batch_size / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[dict[str, Any]]:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    steps, repeats = (4, 1) if quick else (12, 3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "embedded"
        generate(root, DataParams(preset="tiny" if quick else "default"))
        params = TrainParams(cache_dir=str(Path(tmp) / "cache"), max_steps=WARMUP + steps,
                             **({"batch_size": 16} if quick else {}))
        plain, waits, light = [], [], []
        for _ in range(repeats):  # interleaved, so background load hits both alike
            durations, wait = plain_loop(root, params, steps)
            plain += durations
            waits += wait
            light += lightning_loop(root, params, steps)
        loader = loader_only(root, params, steps)
    # Lower quartile of per-step wall times: load from other processes only ever adds time.
    p_step, l_step = _q1(plain), _q1(light)
    p, lt = params.batch_size / p_step, params.batch_size / l_step
    return [
        row("train: Lightning loop vs plain torch loop (same model, batch, data)", lt, p, "smp/s", 0.95, "higher"),
        row("train: time the step waits on data vs step time (plain loop)", statistics.median(waits),
            statistics.median(plain), "s", 0.10, "lower"),
        row("train: loader alone vs what training consumes", loader, p, "smp/s", 3.0, "higher"),
    ]


def _q1(values: list[float]) -> float:
    return statistics.quantiles(values, n=4)[0] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny benchmark, few steps (smoke test)")
    print_rows(run(ap.parse_args().quick))


if __name__ == "__main__":
    main()
