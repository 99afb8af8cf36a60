"""What differs between the retriever families, in one table instead of branches through the code.

``clip`` follows UniIR's CLIP_SF recipe (docs/clip-sf.md): CLIP's raw
projections are summed and normalised once, the temperature is CLIP's own trained ``logit_scale``,
texts go through UniIR's ``format_string`` and OpenAI ``clip``'s cleaning before BPE (``uniir_text``),
and weight decay spares every gain, bias and the scale.

``dual`` pairs a sentence encoder with a vision tower trained from scratch. Its two towers start in
unrelated spaces with different norms (MiniLM's mean-pooled embedding vs a random ViT's), so a raw
sum would let the larger one drown the other: each is normalised before the sum. Equal weights
then let whichever term the other side cannot match add noise (emblemkb t6: an emblem photo against
passages that never describe it), so the sum is weighted per entry, a_t * text + a_v * image, by a
small gate on the entry's own text (``rare.model.retriever.ModalityGate``); a query's text carries its
task's instruction, so the gate learns per task how much its image counts. The gate starts at (1, 1),
the plain sum, and is trained at ``lr_new``; an entry with one modality is unaffected. It has no
pretrained temperature, so it learns a fresh one from ``init_temperature`` (clamped at 100, as CLIP
clamps), and its uncased WordPiece tokenizer gains nothing from re-capitalised, re-punctuated text.

``vlm`` embeds an entry's text and image together in one Qwen-VL decoder pass (LamRA-Ret's recipe,
docs/vlm.md): nothing to fuse, UniIR's ``format_string`` on every text as LamRA applies it, a fixed
temperature of 0.05 unless a switch says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from rare.model.towers import ClipTowers, DualTowers
from rare.model.vlm import VlmTowers

NoDecay = Callable[[str, nn.Parameter], bool]


def _gain_or_bias(name: str, p: nn.Parameter) -> bool:
    return p.ndim < 2


def _uniir_gain_or_bias(name: str, p: nn.Parameter) -> bool:
    """UniIR's ``exclude`` rule for its zero-decay group, verbatim."""
    return p.ndim < 2 or any(part in name for part in ("bn", "ln", "bias", "logit_scale"))


@dataclass(frozen=True)
class Family:
    normalise_each: bool     # normalise text and image embeddings before summing them (else: raw sum)
    gated: bool              # weight the two terms per entry by a learnt gate on its text (model.retriever)
    own_temperature: bool    # a fresh learnable scale on the retriever (else: the towers' pretrained one)
    text_format: str         # key of rare.data.views.TEXT_FORMATS applied to every text before tokenising
    no_decay: NoDecay        # parameters trained without weight decay
    towers: type[DualTowers] | type[ClipTowers] | type[VlmTowers]  # builds, reloads and describes the encoders
    joint: bool = False      # one model embeds text and image together: forward, collator, scale and export are
    #                          the towers' own (rare.model.vlm), nothing is fused


FAMILIES: dict[str, Family] = {
    "dual": Family(normalise_each=True, gated=True, own_temperature=True, text_format="none", no_decay=_gain_or_bias,
                   towers=DualTowers),
    "clip": Family(normalise_each=False, gated=False, own_temperature=False, text_format="uniir",
                   no_decay=_uniir_gain_or_bias, towers=ClipTowers),
    "vlm": Family(normalise_each=False, gated=False, own_temperature=False, text_format="format_string", no_decay=_gain_or_bias,
                  towers=VlmTowers, joint=True),
}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown retriever family {name!r}; allowed: {list(FAMILIES)}") from None
