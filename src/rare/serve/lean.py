"""Serving's exact shortcuts around per-call overhead on a CPU: Linear layers on prepacked weights, and a
BERT text tower's forward pass without transformers' per-call machinery.

A served text query costs mostly its text tower's forward pass, at a few short queries per batch:
- ``PackedLinear``: under bf16 autocast a CPU with oneDNN runs every ``linear`` through oneDNN's kernel,
  which reorders the weight into its own layout on every call. ``PackedLinear`` calls that kernel on a
  weight reordered once: a fifth less time per projection at a few queries' tokens, the same bits.
- ``LeanBert`` runs the same kernels, under the caller's autocast, on the same tensors in the same order as
  ``transformers``' ``BertModel`` in eval mode with SDPA attention: word + token-type + position embeddings
  and their LayerNorm, transformers' own bidirectional mask, then per block the query/key/value projections,
  SDPA, the output projection and residual LayerNorm, and the feed-forward with its residual LayerNorm.
  It drops the Python around them (per-module hooks and decorators, keyword plumbing, output records),
  about a fifth of the pass. It also gives ``rare.serve.shared`` its two seams: keep the hidden states
  after block n, and start a pass from such hidden states.

Each is swapped in only after a probe gives bit-identical outputs, so a transformers or torch release that
computes differently keeps the original module (tests/test_serve_lean.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput

log = logging.getLogger(__name__)


def _layer_norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def swap_modules(model: nn.Module, replace: Callable[[str, nn.Module], nn.Module | None]) -> int:
    """Put ``replace(name, child)`` in place of every submodule it gives a module for; how many it replaced."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (new := replace(name, child)) is not None:
                setattr(parent, name, new)
                swapped += 1
    return swapped


_PACK_ROWS = 64  # the row count oneDNN's weight layout is chosen for: a few short queries' tokens


class PackedLinear(nn.Module):
    """A bf16 ``nn.Linear`` (the same ``weight`` and ``bias`` parameters, so the same state dict) that also
    holds its weight in oneDNN's layout. For bf16 autocast only: it casts its input as autocast would."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.weight, self.bias = lin.weight, lin.bias
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(lin.weight.detach(), _PACK_ROWS),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed, self.bias, "none", [], "")


def _same_as_linear(lin: nn.Linear, packed: PackedLinear) -> bool:
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for rows in (1, 37):
            x = torch.randn(rows, lin.in_features, generator=g)
            if not torch.equal(F.linear(x, lin.weight, lin.bias), packed(x)):
                return False
    return True


def pack_linears(model: nn.Module, precision: str) -> int:
    """Swap every bf16 CPU ``nn.Linear`` in ``model`` for a ``PackedLinear`` that passes the probe; how many."""
    if precision != "bf16" or not torch.backends.mkldnn.is_available():
        return 0

    def packed(_: str, child: nn.Module) -> PackedLinear | None:
        if type(child) is not nn.Linear or child.weight.dtype != torch.bfloat16 or child.weight.device.type != "cpu":
            return None
        try:
            new = PackedLinear(child)
            return new if _same_as_linear(child, new) else None
        except RuntimeError:  # a oneDNN build or CPU without this bf16 kernel
            return None

    return swap_modules(model, packed)


class LeanBert(nn.Module):
    """Holds the ``BertModel``'s own submodules under the same names (``embeddings``, ``encoder.layer``), so
    its weights, state dict and block list read as the model's."""

    def __init__(self, bert: BertModel):
        super().__init__()
        self.config, self.embeddings, self.encoder = bert.config, bert.embeddings, bert.encoder
        self.keep_after: int | None = None              # rare.serve.shared: keep the states after this block
        self.kept: torch.Tensor | None = None
        self.resume: tuple[int, torch.Tensor] | None = None  # start at block i from these states

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        length = input_ids.shape[1]
        positions = e.position_ids[:, :length]
        types = e.token_type_ids.expand(positions.shape[0], -1).gather(1, positions).expand(input_ids.shape[0], length)
        h = F.embedding(input_ids, e.word_embeddings.weight) + F.embedding(types, e.token_type_embeddings.weight)
        return _layer_norm(h + F.embedding(positions, e.position_embeddings.weight), e.LayerNorm)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        start, h = self.resume if self.resume is not None else (0, self._embed(input_ids))
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=h, attention_mask=attention_mask)
        layers = self.encoder.layer
        for i in range(start, len(layers)):
            h = self._block(layers[i], h, mask)
            if i + 1 == self.keep_after:
                self.kept = h
        return BaseModelOutput(last_hidden_state=h)

    def _block(self, layer: nn.Module, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """One ``BertLayer`` (self-attention, no cache, no cross-attention) in eval mode. Its projections
        (``nn.Linear`` or ``PackedLinear``) are called through ``forward``, without a module call's hooks."""
        att = layer.attention.self
        batch, length = h.shape[:2]
        heads = (batch, length, -1, att.attention_head_size)
        q = att.query.forward(h).view(heads).transpose(1, 2)
        k = att.key.forward(h).view(heads).transpose(1, 2)
        v = att.value.forward(h).view(heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=att.scaling,
                                           is_causal=False)
        a = a.reshape(a.shape[0], -1, length, v.shape[-1]).transpose(1, 2).contiguous().reshape(batch, length, -1)
        out = layer.attention.output
        h = _layer_norm(out.dense.forward(a.contiguous()) + h, out.LayerNorm)
        x = layer.intermediate.intermediate_act_fn(layer.intermediate.dense.forward(h))
        return _layer_norm(layer.output.dense.forward(x) + h, layer.output.LayerNorm)


def _supported(m: nn.Module) -> bool:
    if type(m) is not BertModel:
        return False
    c = m.config
    return (not m.training and not c.is_decoder and not c.add_cross_attention
            and c._attn_implementation == "sdpa" and getattr(c, "position_embedding_type", "absolute") == "absolute"
            and not c.chunk_size_feed_forward and getattr(m, "pooler", None) is None)


def _probe(bert: BertModel, lean: LeanBert, precision: str) -> bool:
    """Hidden states of both passes on a fixed batch with padding, under serving's autocast: equal bits?"""
    g = torch.Generator().manual_seed(0)
    dev = next(bert.parameters()).device
    ids = torch.randint(0, bert.config.vocab_size, (3, 13), generator=g).to(dev)
    mask = torch.ones_like(ids)
    mask[1, 9:], mask[2, 4:] = 0, 0
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        want = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        got = lean(ids, mask).last_hidden_state
        whole = bert(input_ids=ids[:1], attention_mask=mask[:1]).last_hidden_state  # no padding: mask may be None
        whole_lean = lean(ids[:1], mask[:1]).last_hidden_state
    return torch.equal(want, got) and torch.equal(whole, whole_lean)


def lean_text_towers(model: nn.Module, precision: str) -> int:
    """Swap every supported ``BertModel`` in ``model`` for a ``LeanBert`` that passes the probe; how many."""

    def lean(name: str, child: nn.Module) -> LeanBert | None:
        if not _supported(child):
            return None
        new = LeanBert(child)
        if _probe(child, new, precision):
            return new
        log.warning("%s: the lean BERT pass differs from transformers' here; serving keeps transformers'", name)
        return None

    return swap_modules(model, lean)
