"""The LightningModule: one contrastive step over (query, positive) batches.

Checkpoints hold only tensors and plain containers (they load with ``weights_only=True``) and
carry the RNG state, so dropout draws continue exactly where an interrupted run stopped.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytorch_lightning as pl
import torch

from rare.config.train import OptimParams
from rare.model.retriever import Retriever
from rare.train.gradcache import grad_cache_step
from rare.train.loss import contrastive_loss


def param_groups(retriever: Retriever, optim: OptimParams) -> list[dict[str, Any]]:
    """Pretrained vs from-scratch learning rates; weight decay except on what the family exempts
    (gains, biases, the temperature)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in retriever.named_parameters():
        if not p.requires_grad:
            continue
        key = (name in retriever.new_parameters, not retriever.family.no_decay(name, p))
        groups.setdefault(key, []).append(p)
    out = []
    for (new, decay), params in sorted(groups.items()):
        lr = optim.lr_new if new and optim.lr_new is not None else optim.lr
        out.append({"params": params, "lr": lr, "weight_decay": optim.weight_decay if decay else 0.0})
    return out


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min((step - warmup) / (total - warmup), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class RetrieverModule(pl.LightningModule):
    def __init__(self, retriever: Retriever, optim: OptimParams, total_steps: int, symmetric: bool = False,
                 grad_cache_chunk: int | None = None):
        super().__init__()
        # GradCache backpropagates chunk by chunk, so the step is driven by hand (Lightning's manual optimisation).
        self.grad_cache_chunk = grad_cache_chunk
        self.automatic_optimization = grad_cache_chunk is None
        self.retriever = retriever
        self.optim = optim
        # Known up front: Lightning's estimated_stepping_batches would build the train loader before a
        # checkpoint is restored, and the sampler would then not know where the run stopped.
        self.total_steps = total_steps
        self.symmetric = symmetric
        self._rng_to_restore: dict[str, torch.Tensor] | None = None

    def _loss(self, batch: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
        q = self.retriever(batch["query"])
        c = self.retriever(batch["cand"])
        return contrastive_loss(q, c, self.retriever.scale(), self.symmetric)

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch) if self.automatic_optimization else self._grad_cache_step(batch)
        size = int(batch["query"]["size"])
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        self.log("train/temperature", 1.0 / self.retriever.scale().detach(), on_step=True, batch_size=size)
        return loss

    def _grad_cache_step(self, batch: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad()
        no_sync = getattr(self.trainer.strategy, "block_backward_sync", None) or contextlib.nullcontext
        loss = grad_cache_step(
            self.retriever, batch["query"], batch["cand"],
            lambda q, c: contrastive_loss(q, c, self.retriever.scale(), self.symmetric),
            self.grad_cache_chunk, self.retriever.split, backward=self.manual_backward, no_sync=no_sync,
            prepare=self.retriever.frozen_features, loss_params=self.retriever.scale)
        opt.step()
        sched.step()
        return loss

    def validation_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        # Lightning would log it one step early (19, 39, ...): LossHistory logs it with the real step.
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, logger=False,
                 batch_size=int(batch["query"]["size"]))
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        opt = torch.optim.AdamW(param_groups(self.retriever, o), lr=o.lr, betas=o.betas, eps=o.eps)
        def factor(step: int) -> float:
            return lr_factor(step, o.warmup_steps, self.total_steps, o.schedule)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # exact resume --------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("rng")

    def on_train_start(self) -> None:
        if self._rng_to_restore:
            torch.set_rng_state(self._rng_to_restore["torch"])
            if "cuda" in self._rng_to_restore and torch.cuda.is_available():
                torch.cuda.set_rng_state(self._rng_to_restore["cuda"])
            self._rng_to_restore = None
