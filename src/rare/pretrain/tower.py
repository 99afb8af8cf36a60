"""Pretrain the dual encoder's vision tower CLIP-style on the alt-text corpus; export it in HF format.

The text tower stays frozen, so each distinct caption is embedded once, through the retriever's
own ``forward`` (the code evaluation runs); only the vision tower learns, to land each image on
its caption's embedding. The image projection is held at the identity, so everything learnt is
in the vision tower and the export is a plain Hugging Face checkpoint (``config.json`` +
``model.safetensors``) that ``train`` loads with ``from_pretrained``, as the ``mbeir`` profile
loads CLIP. Resumable: a checkpoint every few steps in ``pretrain.cache_dir``, keyed by the params.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from rare.atomic import atomic_write, replacing, replacing_folder
from rare.benchmark.render import render
from rare.config.pretrain import PretrainParams
from rare.config.train import TrainParams
from rare.contracts import HoldoutRecall, ModelMeta, PretrainFigures, TextModes
from rare.hashing import key_digest
from rare.manifest import write_folder_manifest
from rare.model import Collator, EncodeInput, Retriever, build_retriever, save_retriever
from rare.pretrain.corpus import AltTextPair, build_corpus
from rare.train.module import lr_factor

log = logging.getLogger(__name__)
LAST = "last.pt"
TEXT_BATCH = 512


class _Renders(Dataset):
    """Pair i -> (its rendered image, its caption's index); rendering runs in the loader's workers."""

    def __init__(self, pairs: Sequence[AltTextPair], caption_ids: Sequence[int], image_size: int):
        self.pairs, self.caption_ids, self.image_size = pairs, caption_ids, image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[EncodeInput, int]:
        return EncodeInput("", render(self.pairs[i].scene, self.image_size)), self.caption_ids[i]


@dataclass
class _Collate:
    collator: Collator

    def __call__(self, items: list[tuple[EncodeInput, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.collator([x for x, _ in items]), torch.tensor([c for _, c in items])


class _Steps(Sampler[list[int]]):
    """Batches for steps ``start..steps-1``: a fresh seeded permutation per epoch, so a resumed run
    draws exactly the batches the uninterrupted one would have."""

    def __init__(self, n: int, batch: int, steps: int, seed: int, start: int = 0):
        self.n, self.batch, self.steps, self.seed, self.start = n, batch, steps, seed, start

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.n // self.batch
        perm, epoch = None, -1
        for step in range(self.start, self.steps):
            if step // per_epoch != epoch:
                epoch = step // per_epoch
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
            assert perm is not None
            at = (step % per_epoch) * self.batch
            yield perm[at:at + self.batch]


def _embed_texts(retriever: Retriever, texts: Sequence[str]) -> torch.Tensor:
    collate = retriever.collator()
    with torch.no_grad():
        return torch.cat([retriever(collate([EncodeInput(t, None) for t in texts[i:i + TEXT_BATCH]]))
                          for i in range(0, len(texts), TEXT_BATCH)])


def _embed_images(retriever: Retriever, pairs: Sequence[AltTextPair], image_size: int) -> torch.Tensor:
    collate = retriever.collator()
    with torch.no_grad():
        return torch.cat([retriever(collate([EncodeInput("", render(p.scene, image_size))
                                             for p in pairs[i:i + TEXT_BATCH]]))
                          for i in range(0, len(pairs), TEXT_BATCH)])


def contrastive(images: torch.Tensor, texts: torch.Tensor, caption_ids: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where images that share a caption are all positives of it (alt-text repeats)."""
    unique, inverse = torch.unique(caption_ids, return_inverse=True)
    logits = scale * images @ texts[unique].T                      # [B images, U captions]
    image_to_text = F.cross_entropy(logits, inverse)
    positive = F.one_hot(inverse, len(unique)).T.bool()            # [U, B]
    by_text = logits.T
    text_to_image = (torch.logsumexp(by_text, dim=1)
                     - torch.logsumexp(by_text.masked_fill(~positive, float("-inf")), dim=1)).mean()
    return (image_to_text + text_to_image) / 2


def holdout_recall(retriever: Retriever, pairs: Sequence[AltTextPair], image_size: int) -> HoldoutRecall:
    """Retrieval among held-out pairs: text->image R@5 (any image with that caption is a hit),
    image->text R@1 (over the distinct captions)."""
    captions = sorted({p.caption for p in pairs})
    index = {c: i for i, c in enumerate(captions)}
    ids = torch.tensor([index[p.caption] for p in pairs])
    sims = _embed_texts(retriever, captions) @ _embed_images(retriever, pairs, image_size).T   # [U, N]
    top5 = sims.topk(min(5, sims.shape[1]), dim=1).indices
    t2i = (ids[top5] == torch.arange(len(captions)).unsqueeze(1)).any(dim=1).float().mean()
    i2t = (sims.argmax(dim=0) == ids).float().mean()
    return {"holdout_t2i_r5": round(100 * float(t2i), 2), "holdout_i2t_r1": round(100 * float(i2t), 2),
            "holdout_pairs": len(pairs), "holdout_captions": len(captions)}


def _work_dir(params: PretrainParams) -> Path:
    return Path(params.cache_dir) / f"run-{key_digest(params.model_dump(mode='json'))}"


def _save_state(path: Path, step: int, retriever: Retriever, opt: torch.optim.Optimizer,
                sched: torch.optim.lr_scheduler.LRScheduler, losses: list[float]) -> None:
    with replacing(path) as tmp:
        torch.save({"step": step, "model": retriever.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "losses": losses, "rng": torch.get_rng_state()}, tmp)


def _export(retriever: Retriever, out: Path) -> None:
    """The vision tower as an HF checkpoint, written beside ``out`` and swapped in whole."""
    with replacing_folder(out) as tmp:
        retriever.towers.vision.save_pretrained(tmp)
        write_folder_manifest(tmp)  # last: `rare train` checks the folder against it before it starts


def pretrain(out: Path, params: PretrainParams, on_step: Any = None) -> PretrainFigures:
    """Train, export the vision tower to ``out``; returns the stage's figures. ``on_step(step, loss)``
    sees every step (MLflow logging)."""
    import transformers

    began = time.monotonic()
    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(params.seed)
    retriever = build_retriever(params.model)
    towers = retriever.towers
    towers.requires_grad_(False)
    towers.identity_projection(towers.image_proj)
    towers.vision.requires_grad_(True)
    retriever.logit_scale.data.fill_(float(torch.tensor(1.0 / params.init_temperature).log()))

    pairs = build_corpus(params.seed, params.scenes)
    held, train = pairs[:params.holdout], pairs[params.holdout:]
    if len(train) < params.batch_size:
        raise ValueError(f"pretrain: {len(train)} training pairs cannot fill one batch of {params.batch_size}")
    captions = sorted({p.caption for p in train})
    index = {c: i for i, c in enumerate(captions)}
    retriever.eval()  # the frozen text tower: no dropout
    texts = _embed_texts(retriever, captions)
    text_seconds = time.monotonic() - began

    trainable = [p for p in retriever.parameters() if p.requires_grad]
    o = params.optim
    opt = torch.optim.AdamW([{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": o.weight_decay},
                             {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}],
                            lr=o.lr, betas=o.betas, eps=o.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, o.warmup_steps, params.steps, o.schedule))
    work = _work_dir(params)
    work.mkdir(parents=True, exist_ok=True)
    start, losses = 0, []
    if (work / LAST).exists():
        state = torch.load(work / LAST, weights_only=True)
        retriever.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, losses = state["step"], state["losses"]
        torch.set_rng_state(state["rng"])
        log.info("pretrain: resuming at step %d", start)

    size = int(retriever.spec["image_size"])
    loader = DataLoader(_Renders(train, [index[p.caption] for p in train], size),
                        batch_sampler=_Steps(len(train), params.batch_size, params.steps, params.seed, start),
                        collate_fn=_Collate(retriever.collator()), num_workers=params.num_workers)
    towers.vision.train()
    fit_began = time.monotonic()
    for step, (batch, ids) in enumerate(loader, start=start):
        loss = contrastive(retriever(batch), texts, ids, retriever.scale())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 5))
        if on_step is not None:
            on_step(step, losses[-1])
        if (step + 1) % params.checkpoint_every_n_steps == 0 and step + 1 < params.steps:
            _save_state(work / LAST, step + 1, retriever, opt, sched, losses)
    fit_seconds = time.monotonic() - fit_began
    retriever.eval()
    recall = holdout_recall(retriever, held, size)
    temperature = round(1.0 / float(retriever.scale()), 5)
    _export(retriever, out)
    shutil.rmtree(work, ignore_errors=True)
    figures: PretrainFigures = {
        **recall,
        "steps": params.steps, "batch_size": params.batch_size, "pairs": len(train), "captions": len(captions),
        "loss_start": losses[0], "loss_final": losses[-1], "loss": losses, "temperature": temperature,
        "text_seconds": round(text_seconds, 2), "fit_seconds": round(fit_seconds, 2),
        "pretrain_seconds": round(time.monotonic() - began, 2),
    }
    log.info("pretrained %s: %d steps in %.1f s, loss %.3f -> %.3f, held-out text->image R@5 %.1f", out,
             params.steps, figures["pretrain_seconds"], losses[0], losses[-1], figures["holdout_t2i_r5"])
    return figures


ZERO_SHOT = "zero-shot"


def export_zero_shot(params: TrainParams, out: Path) -> Path:
    """The retriever ``train`` starts from (pretrained towers, identity projections), exported with no
    fine-tuning step: the zero-shot row, as UniIR reports zero-shot CLIP, evaluated like any other."""
    torch.manual_seed(params.seed)
    retriever = build_retriever(params.model)
    meta = ModelMeta(variant=ZERO_SHOT, text_mode=TextModes(corpus=params.text_mode.corpus, query=params.text_mode.query),
                     instruction_seed=params.instruction_seed, seed=params.seed, global_steps=0)
    return save_retriever(retriever, out, meta)


RUNTIME = ("text_seconds", "fit_seconds", "pretrain_seconds", "steps", "batch_size", "pairs", "captions",
           "holdout_pairs", "holdout_captions")


def write_pretrain_metrics(figures: dict[str, Any], path: Path) -> None:
    """Split as the other stages split it: ``path`` (the DVC metric) holds quality figures only, the loss
    curve goes to ``loss/pretrain.json`` for `dvc plots`, timings and counts to the untracked ``runtime/``."""
    def write(target: Path, obj: Any) -> None:
        atomic_write(target, [(json.dumps(obj, indent=2) + "\n").encode()])

    write(path, {k: v for k, v in figures.items() if k not in RUNTIME and k != "loss"})
    write(path.parent / "loss" / "pretrain.json", [{"step": i, "loss": v} for i, v in enumerate(figures["loss"])])
    write(path.parent / "runtime" / path.name, {k: figures[k] for k in RUNTIME if k in figures})
