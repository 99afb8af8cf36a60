"""The retriever: UniIR CLIP_SF score-level fusion over either tower family.

An entry's embedding is normalise(text + image), each term present only when the entry has it;
the ``clip`` family sums CLIP's raw projections as UniIR does, the ``dual`` family normalises
each term first and weights the two by a learnt gate on the entry's text (``ModalityGate``;
``rare.model.families`` says why). Training and evaluation call the same ``forward``, so the
trained similarity is the one searched.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rare.config.train import ModelParams
from rare.contracts import ModelMeta, RetrieverSpec
from rare.model.families import Family, family
from rare.model.preprocess import Collator
from rare.model.towers import Towers, freeze_lower_layers, resolve_source

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clips the learned temperature so logits never exceed x100


def _place(x: torch.Tensor, rows: torch.Tensor, size: int) -> torch.Tensor:
    """Rows of ``x`` into a [size, D] zero matrix, as a one-hot matmul (index_add is slow on CPU),
    kept in fp32 under autocast so mixed precision never rounds the embeddings themselves."""
    with torch.autocast(x.device.type, enabled=False):
        return F.one_hot(rows, size).T.float() @ x.float()


class ModalityGate(nn.Module):
    """Per-entry weights (text, image) of the fused sum, read off the entry's own normalised text.

    A query's text carries its task instruction, so the gate can learn per task that an image term
    is noise against the candidates (emblemkb t6: passages never describe the emblem). The weights
    are ``2 * softmax``: zero parameters give exactly (1, 1), so an untrained gate leaves every
    embedding bit-for-bit as the plain sum gives it, and only their ratio matters after the final
    normalisation. It reads only the text (the image cannot tell which task it is asked in), and detached:
    the gate reads the text tower, it does not train it.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, dim))  # zeros, not nn.Linear's init: no RNG draw
        self.bias = nn.Parameter(torch.zeros(2))
        # A unit text vector has coordinates ~1/sqrt(dim); read at unit scale, a step of lr_new moves the
        # logits as it moves a fresh layer's. Read raw, 60 steps moved the emblemkb t6 image weight 4%.
        self.gain = math.sqrt(dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.softmax(F.linear(self.gain * text.detach(), self.weight, self.bias), dim=-1)


class Retriever(nn.Module):
    def __init__(self, towers: Towers, tokenizer: Any, spec: RetrieverSpec, meta: ModelMeta | None = None,
                 init_temperature: float = 0.07):
        super().__init__()
        self.towers = towers
        self.tokenizer = tokenizer
        self.spec = spec                 # what retriever.json holds: enough to rebuild and preprocess
        self.meta = meta or ModelMeta()  # meta.json: what it was trained on and how evaluation feeds it
        self.family: Family = family(spec["family"])
        if self.family.own_temperature:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.gate = ModalityGate(self.embed_dim) if self.family.gated else None
        self.new_parameters: set[str] = {f"gate.{n}" for n, _ in self.gate.named_parameters()} if self.gate else set()
        self._fingerprint: str | None = None

    @property
    def embed_dim(self) -> int:
        return int(self.spec["embed_dim"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def scale(self) -> torch.Tensor:
        """The multiplier of the cosine similarities in the loss (1 / temperature).

        A fresh scale is exp(logit_scale) clamped at 100 (the clamp has zero gradient, as in CLIP);
        a pretrained tower's own is used as UniIR uses it, ``logit_scale.exp()``, and trained.
        """
        if self.family.joint:
            return self.towers.scale()
        if self.family.own_temperature:
            return self.logit_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()
        return self.towers.logit_scale.exp()

    def collator(self) -> Collator:
        s = self.spec
        if self.family.joint:
            return self.towers.collator(self.tokenizer, s)
        return Collator(self.tokenizer, s["max_text_len"], s["image_size"], s["image_mean"], s["image_std"],
                        s.get("text_format", "none"))

    def split(self, batch: dict[str, torch.Tensor], chunk: int) -> list[dict[str, torch.Tensor]]:
        """Sub-batches of ``chunk`` entries for GradCache (rare.train.gradcache); joint families only."""
        if not self.family.joint:
            raise ValueError(f"GradCache needs a family that embeds each entry in one pass (vlm), not {self.spec['family']!r}")
        return self.towers.split(batch, chunk)

    def frozen_features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` plus what its embedding computes in frozen modules (GradCache's ``prepare``): computed once,
        reused by both of a chunk's passes. Families without such a part return the batch as it is."""
        hook = getattr(self.towers, "frozen_features", None)
        return hook(batch) if hook is not None else batch

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.family.joint:
            return self.towers.embed(batch)
        dev = self.device
        size = int(batch["size"])
        text_part = image_part = torch.zeros(size, self.embed_dim, device=dev, dtype=torch.float32)
        weights = torch.ones(size, 2, device=dev)
        text_rows = batch["text_rows"].to(dev)
        if text_rows.numel():
            t = self.towers.encode_text(batch["input_ids"].to(dev), batch["attention_mask"].to(dev))
            t = F.normalize(t.float(), dim=-1) if self.family.normalise_each else t
            text_part = _place(t, text_rows, size)
            if self.gate is not None:  # an entry without text keeps (1, 1): its one term normalises it away
                weights = weights + _place(self.gate(t) - 1.0, text_rows, size)
        image_rows = batch["image_rows"].to(dev)
        if image_rows.numel():
            v = self.towers.encode_image(batch["pixel_values"].to(dev))
            v = F.normalize(v.float(), dim=-1) if self.family.normalise_each else v
            image_part = _place(v, image_rows, size)
        return F.normalize(weights[:, :1] * text_part + weights[:, 1:] * image_part, dim=-1)

    @property
    def fingerprint(self) -> str:
        """Hash of the spec, the tokenizer and every weight: two exports embed alike iff these match."""
        if self._fingerprint is not None:
            return self._fingerprint
        h = hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode())
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        h.update(backend.to_str().encode() if backend is not None else repr(sorted(self.tokenizer.get_vocab().items())).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:32]

    def freeze_fingerprint(self) -> None:
        """For loaded (read-only) models: compute once instead of re-hashing every access."""
        self._fingerprint = None
        self._fingerprint = self.fingerprint


def build_retriever(params: ModelParams) -> Retriever:
    """A fresh retriever to train, from the training params."""
    from transformers import AutoTokenizer

    fam = family(params.family)
    if fam.joint:
        return _build_joint(params)
    towers, new = fam.towers.build(params)
    if params.train_text_layers is not None:
        freeze_lower_layers(towers.text_tower(), params.train_text_layers)
    tok_source = params.tokenizer or fam.towers.tokenizer_source(params)
    if not tok_source:
        raise ValueError("train.model.tokenizer must be set when the text tower is built from a config")
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(tok_source))
    image_size = towers.image_size(params)
    spec: RetrieverSpec = {
        "format": 1, "family": params.family, "embed_dim": towers.embed_dim,
        "text_pooling": params.text_pooling, "image_pooling": params.image_pooling,
        "image_size": image_size, "image_mean": list(params.image_mean), "image_std": list(params.image_std),
        "max_text_len": params.max_text_len, "text_format": fam.text_format,
    }
    retriever = Retriever(towers, tokenizer, spec, init_temperature=params.init_temperature)
    retriever.new_parameters |= {f"towers.{n}" for n in new}
    return retriever.train()  # from_pretrained hands back eval mode, and Lightning keeps modules' modes


def _build_joint(params: ModelParams) -> Retriever:
    """A ``vlm`` retriever: the towers bring their tokenizer (with ``<emb>``) and image settings."""
    fam = family(params.family)
    towers, tokenizer, vlm_spec = fam.towers.build(params)
    spec: RetrieverSpec = {
        "format": 1, "family": params.family, "embed_dim": towers.embed_dim,
        "text_pooling": vlm_spec["pooling"], "image_pooling": "joint", "image_size": 0,
        "image_mean": list(vlm_spec["image_mean"]), "image_std": list(vlm_spec["image_std"]),
        "max_text_len": vlm_spec["max_len"], "text_format": fam.text_format, "vlm": vlm_spec,
    }
    return Retriever(towers, tokenizer, spec).train()
