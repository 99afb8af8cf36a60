"""Two served variants whose text towers begin with the same frozen layers compute those layers once.

``train.model.train_text_layers`` freezes the text tower's embeddings and all but its top blocks, and every
variant copies them from the same pretrained source: ``none`` and ``both`` hold them bit for bit. A query
both variants read alike (the same text, the same image) then runs the embeddings and the shared blocks in
the leader's forward pass only: the leader's text tower keeps its hidden states after the last shared block,
and the follower's starts from them. Both are ``rare.serve.lean.LeanBert`` towers, which have these two seams;
everything else in the follower's pass (the mask, its own blocks, the pooling, the projection, the gate and
the fusion) is its own (vectors bit-identical, tests/test_serve_shared.py).

Sharing is decided at load time and only where it is exact: the same precision, the same collator
(tokenizer and preprocessing), the same text tower config, and the same tensors in the embeddings and in
each shared block. Anything else, or a batch the two variants read differently (an enhanced query for one),
takes each variant's own whole forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rare.model import EncodeInput
from rare.serve.index import Variant
from rare.serve.lean import LeanBert


def _same_tensors(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def _architecture(tower: nn.Module) -> dict[str, object]:
    """The tower's config without where it was loaded from."""
    return {k: v for k, v in tower.config.to_dict().items() if k != "_name_or_path"}


def _collator_identity(v: Variant) -> tuple[object, ...]:
    col = v.retriever.collator()
    backend = getattr(col.tokenizer, "backend_tokenizer", None)
    settings = {k: val for k, val in vars(col).items() if k != "tokenizer"}
    return (backend.to_str() if backend is not None else repr(sorted(col.tokenizer.get_vocab().items())),
            sorted(settings.items()))


def _lean_tower(v: Variant) -> LeanBert | None:
    tower = v.retriever.towers.text_tower()
    return tower if isinstance(tower, LeanBert) else None


def shared_blocks(leader: Variant, follower: Variant) -> int:
    """How many lower text blocks (with the embeddings) the two hold bit for bit and read alike; 0: none.

    The follower always keeps its top block, so its forward pass still has a block of its own to run."""
    ta, tb = _lean_tower(leader), _lean_tower(follower)
    if (ta is None or tb is None or leader.precision != follower.precision or _architecture(ta) != _architecture(tb)
            or not _same_tensors(ta.embeddings, tb.embeddings)
            or _collator_identity(leader) != _collator_identity(follower)):
        return 0
    n = 0
    for a, b in zip(ta.encoder.layer[:-1], tb.encoder.layer[:-1]):
        if not _same_tensors(a, b):
            break
        n += 1
    return n


@dataclass
class SharedLower:
    """A leader and a follower variant that compute their first ``blocks`` text blocks once per batch (the
    pair's batcher thread is the only one that runs either model, so the towers' seams are its own)."""

    leader: Variant
    follower: Variant
    blocks: int

    def __post_init__(self) -> None:
        lead, follow = _lean_tower(self.leader), _lean_tower(self.follower)
        assert lead is not None and follow is not None, "shared_blocks pairs lean towers only"
        self._lead, self._follow = lead, follow

    def embed(self, items: list[EncodeInput]) -> tuple[np.ndarray, np.ndarray]:
        """Both variants' vectors for the same items: one collation, the shared blocks in the leader only."""
        lead, follow = self._lead, self._follow
        batch = self.leader.retriever.collator()(items)
        lead.keep_after = self.blocks
        try:
            leader = self.leader.encode(batch)
        finally:
            lead.keep_after, hidden, lead.kept = None, lead.kept, None
        if hidden is None:  # no text in the batch: the text towers did not run
            return leader, self.follower.encode(batch)
        follow.resume = (self.blocks, hidden)
        try:
            return leader, self.follower.encode(batch)
        finally:
            follow.resume = None
