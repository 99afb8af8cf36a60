"""Train one ablation variant and export it; the stage (``rare.stages.train``) tracks it.

Resumable: checkpoints live in ``train.cache_dir`` (outside the DVC output, which ``dvc repro``
deletes first), keyed by the params and the identity of every input file, so a killed run
continues from its last checkpoint and a changed input starts afresh.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, ThroughputMonitor

from rare.atomic import atomic_write
from rare.config.train import TrainParams
from rare.contracts import ModelMeta, TextModes, TrainInputs
from rare.data.layout import MBEIRRoot
from rare.failures import worker_errors_unwrapped
from rare.hashing import key_digest
from rare.model import build_retriever, save_retriever
from rare.runtime import sig4
from rare.train.datamodule import Inputs, PairDataModule, TextSettings, resolve_inputs
from rare.train.module import RetrieverModule
from rare.train.progress import StepProgress

log = logging.getLogger(__name__)
LAST = "last.ckpt"


class LossHistory(Callback):
    """(step, loss) of every training batch and of every validation pass, logged to the MLflow run with
    the same steps as the metrics files (step = optimizer steps done: val at 0, 20, ...; the loss of the
    batch that makes update i+1 at step i); kept in checkpoints so a resumed curve is whole.

    A step checkpoint is written before that step's validation pass, so a run killed after it
    would lose the pass: ``catch_up`` names the step a resumed run re-validates (same weights, same
    queries, same value), and restoring the checkpoint's history keeps that entry.
    """

    def __init__(self) -> None:
        self.history: list[list[float]] = []  # validation
        self.train: list[list[float]] = []
        self.catch_up: int | None = None

    def steps(self) -> set[int]:
        return {int(step) for step, _ in self.history}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if "train/loss" in trainer.callback_metrics:
            self.train.append([trainer.global_step - 1, float(trainer.callback_metrics["train/loss"])])

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        step = trainer.global_step if self.catch_up is None else self.catch_up
        value = float(trainer.callback_metrics["val/loss"])
        if step not in self.steps():
            self.history = sorted([*self.history, [step, value]])
            if trainer.logger:
                trainer.logger.log_metrics({"val/loss": value}, step=step)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "train": self.train}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restored = [list(x) for x in state_dict["history"]]
        done = {int(step) for step, _ in restored}
        self.history = sorted(restored + [x for x in self.history if int(x[0]) not in done])
        self.train = [list(x) for x in state_dict.get("train", [])]


def _file_id(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def work_dir(params: TrainParams, variant: str, inputs: Inputs) -> Path:
    key = key_digest({
        "params": params.model_dump(mode="json"), "variant": variant,
        "files": [_file_id(p) for p in [*inputs.train, inputs.train_pool, *(f for pair in inputs.val for f in pair)]],
    })
    return Path(params.cache_dir) / "runs" / f"{variant}-{key}"


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else k, v))
        return out
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else value}


def _strategy(params: TrainParams) -> Any:
    if params.strategy != "ddp":
        return "auto"
    from pytorch_lightning.strategies import DDPStrategy

    # A rank's batch can lack images (or texts) on both sides, leaving a tower without gradients
    # for that step; DDP must then not wait for them.
    return DDPStrategy(find_unused_parameters=True)


def _fit(trainer: pl.Trainer, module: RetrieverModule, datamodule: PairDataModule, resume: Path,
         history: LossHistory, val_every: int) -> None:
    """Validate at step 0 (fresh runs) or catch up the resumed step's pass, fit, validate at the last step."""
    with warnings.catch_warnings():
        # The sampler resumes mid-epoch from trainer.global_step (Lightning can't see that), and
        # throughput is reported in samples/s, not FLOPs.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        warnings.filterwarnings("ignore", message="When using the `ThroughputMonitor`, you need to define")
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        if not resume.exists():
            trainer.validate(module, datamodule=datamodule, verbose=False)
        else:
            step, done = _checkpointed(resume, history)
            if step > 0 and step % val_every == 0 and step not in done:
                history.catch_up = step
                try:
                    trainer.validate(module, datamodule=datamodule, ckpt_path=resume, verbose=False, weights_only=True)
                finally:
                    history.catch_up = None
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume if resume.exists() else None, weights_only=True)
        if history.history and history.history[-1][0] != trainer.global_step:
            trainer.validate(module, datamodule=datamodule, verbose=False)


def _checkpointed(ckpt: Path, history: LossHistory) -> tuple[int, set[int]]:
    """The step a checkpoint was taken at and the validation steps it has recorded."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    recorded = state.get("callbacks", {}).get(history.state_key, {}).get("history", [])
    return int(state["global_step"]), {int(step) for step, _ in recorded}


@dataclass(frozen=True)
class Trained:
    """What one training hands its stage: the export, and (rank 0 only) its meta and timings to track."""

    out: Path
    meta: ModelMeta | None = None              # None on the DDP worker ranks: rank 0 exports and tracks
    timings: dict[str, float] = field(default_factory=dict)
    example_image: Path | None = None          # an input example for the registered model's signature


def train_variant(variant: str, data: Path, out: Path, params: TrainParams, corpus_enhanced: Path | None = None,
                  queries_enhanced: Path | None = None, callbacks: Sequence[Callback] = (),
                  metrics: Path | None = None, logger: Any = False) -> Trained:
    """Train ``variant`` on the M-BEIR root ``data``; export to ``out``.

    A side reads enhanced text exactly when its enhanced folder is given (the stage passes only the
    folders its variant reads), so the variant's name only labels the export and keys its checkpoints.
    ``callbacks`` are extra Lightning callbacks (profiling, or a test that interrupts a run);
    ``metrics`` gets the training figures (see ``write_train_metrics``); ``logger`` is the Lightning
    logger the stage hands in (its MLflow run), or False.
    """
    import transformers

    began = time.monotonic()
    transformers.utils.logging.set_verbosity_error()  # the unused pretrained pooler is expected
    use_corpus, use_query = corpus_enhanced is not None, queries_enhanced is not None
    raw = MBEIRRoot.open(data)
    inputs = resolve_inputs(raw, params, corpus_enhanced, queries_enhanced)
    pl.seed_everything(params.seed, workers=True, verbose=False)
    retriever = build_retriever(params.model)
    text = TextSettings(use_query, use_corpus, params.text_mode.query, params.text_mode.corpus,
                        params.instruction_seed, params.seed)
    datamodule = PairDataModule(raw, inputs, text, params, retriever.collator())
    work = work_dir(params, variant, inputs)
    resume = work / LAST

    if logger:
        logger.log_hyperparams({**_flat("train", params.model_dump(mode="json")), "variant": variant,
                                "data": str(raw.path), "train_files": json.dumps([str(p) for p in inputs.train]),
                                "train_pool": str(inputs.train_pool)})

    history = LossHistory()
    trainer = pl.Trainer(
        accelerator=params.accelerator, devices=params.devices, num_nodes=params.num_nodes,
        strategy=_strategy(params), precision=params.precision,
        max_epochs=params.epochs, max_steps=params.max_steps or -1,
        val_check_interval=params.val_every_n_steps, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        gradient_clip_val=params.optim.grad_clip, use_distributed_sampler=False, log_every_n_steps=1,
        logger=logger, enable_model_summary=False, enable_progress_bar=False, default_root_dir=work,
        callbacks=[
            ModelCheckpoint(dirpath=work, filename="step-{step}", save_last=True, save_top_k=0,
                            every_n_train_steps=params.checkpoint_every_n_steps),
            ThroughputMonitor(batch_size_fn=_batch_size, window_size=5),
            history,
            StepProgress(f"train {variant}"),
            *callbacks,
        ],
    )
    datamodule.setup("fit")
    assert datamodule.train_set is not None
    per_epoch = len(datamodule.train_set) // (params.batch_size * trainer.world_size)
    if per_epoch == 0:
        raise ValueError(f"{len(datamodule.train_set)} training queries cannot fill one global batch of "
                         f"{params.batch_size * trainer.world_size}; lower train.batch_size")
    total = min(params.epochs * per_epoch, params.max_steps or params.epochs * per_epoch)
    vlm = params.model.vlm if params.model.family == "vlm" else None
    module = RetrieverModule(retriever, params.optim, total, params.symmetric_loss,
                             grad_cache_chunk=vlm.grad_cache_chunk if vlm else None)
    start = time.monotonic()
    with worker_errors_unwrapped():
        _fit(trainer, module, datamodule, resume, history, params.val_every_n_steps)
    fit_seconds = time.monotonic() - start
    if not trainer.is_global_zero:
        return Trained(Path(out))
    samples = trainer.global_step * params.batch_size * trainer.world_size

    meta = ModelMeta(
        variant=variant, text_mode=TextModes(corpus=params.text_mode.corpus, query=params.text_mode.query),
        instruction_seed=params.instruction_seed, seed=params.seed, train_file=params.train_file,
        global_steps=trainer.global_step, global_batch=params.batch_size * trainer.world_size,
        samples=samples, val_loss=history.history, train_losses=history.train,
        train_loss=float(trainer.callback_metrics.get("train/loss", float("nan"))),
        inputs=TrainInputs(data=str(raw.path), corpus_enhanced=str(corpus_enhanced) if use_corpus else None,
                           queries_enhanced=str(queries_enhanced) if use_query else None),
    )
    # Timings change from run to run: they go to the metrics file, never into the model folder.
    timings = {"fit_seconds": round(fit_seconds, 2),
               "train_seconds": round(time.monotonic() - began, 2),  # the whole stage: loading, caches, fit, val
               "samples_per_sec": round(samples / fit_seconds, 2)}
    save_retriever(retriever, out, meta)
    if metrics is not None:
        write_train_metrics(meta, timings, metrics)
    if not params.keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    log.info("trained %s: %d steps in %.1f s (fit %.1f s, %.1f samples/s), val loss %s -> %s", variant,
             trainer.global_step, timings["train_seconds"], timings["fit_seconds"], timings["samples_per_sec"],
             sig4(history.history[0][1] if history.history else None),
             sig4(history.history[-1][1] if history.history else None))
    return Trained(Path(out), meta, timings, _example_image(raw))


def write_train_metrics(meta: ModelMeta, timings: dict[str, float], path: Path) -> Path:
    """Training figures, split by what they are for.

    ``path`` (the DVC metric) holds the losses only, so `dvc exp show` and `dvc metrics diff` compare
    quality; ``loss/<variant>_{train,val}.json`` beside it are the per-step curves `dvc plots` draws;
    timings and counts go to ``runtime/<name>`` beside it, which neither git nor DVC tracks, so a rerun
    that changes nothing leaves `git status` clean.
    """
    curve, variant = meta.val_loss or [], meta.variant
    path = Path(path)
    _write_json(path, {"train_loss": meta.train_loss, "val_loss_final": curve[-1][1] if curve else None})
    for split, points in (("train", meta.train_losses or []), ("val", curve)):
        _write_json(path.parent / "loss" / f"{variant}_{split}.json",
                    [{"step": int(step), "loss": value} for step, value in points])
    _write_json(path.parent / "runtime" / path.name,
                {**timings, "global_steps": meta.global_steps, "samples": meta.samples})
    return path


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, [(json.dumps(obj, indent=2) + "\n").encode()])


def _example_image(raw: MBEIRRoot) -> Path | None:
    images = (p for p in (raw.path / "mbeir_images").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return next(images, None)


def _batch_size(batch: dict[str, dict[str, Any]]) -> int:
    return int(batch["query"]["size"])
