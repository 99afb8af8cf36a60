"""Two served variants whose text towers begin with the same frozen layers compute those layers once.

``train.model.train_text_layers`` freezes the text tower's embeddings and all but its top blocks, and every
variant copies them from the same pretrained source: ``none`` and ``both`` hold them bit for bit. A query
both variants read alike (the same text, the same image) then runs the embeddings and the shared blocks in
the leader's forward pass only. The follower's own forward pass runs unchanged from there on: its embeddings
hand on the leader's hidden states and its block list holds only its own upper blocks, so the mask, its
blocks, the pooling, the projection and the fusion are the model code's own (vectors bit-identical,
tests/test_serve_shared.py).

Sharing is decided at load time and only where it is exact: the same precision, the same collator
(tokenizer and preprocessing), the same text tower config, and the same tensors in the embeddings and in
each shared block. Anything else, or a batch the two variants read differently (an enhanced query for one),
takes each variant's own whole forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rare.model import EncodeInput
from rare.serve.index import Variant


def _blocks(tower: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The tower's transformer blocks and their attribute path, found as ``freeze_lower_layers`` finds them
    (not shared with it: the model code is hashed into the embedding cache keys)."""
    n = getattr(tower.config, "num_hidden_layers", None)
    return next(((name, m) for name, m in tower.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n),
                None)


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


def shared_blocks(leader: Variant, follower: Variant) -> int:
    """How many lower text blocks (with the embeddings) the two hold bit for bit and read alike; 0: none.

    The follower always keeps its top block, so its forward pass still has a block of its own to run."""
    ta, tb = leader.retriever.towers.text_tower(), follower.retriever.towers.text_tower()
    found_a, found_b = _blocks(ta), _blocks(tb)
    if (found_a is None or found_b is None or found_a[0] != found_b[0] or leader.precision != follower.precision
            or _architecture(ta) != _architecture(tb) or not hasattr(ta, "embeddings")
            or not _same_tensors(ta.embeddings, tb.embeddings)
            or _collator_identity(leader) != _collator_identity(follower)):
        return 0
    n = 0
    for a, b in zip(found_a[1][:-1], found_b[1][:-1]):
        if not _same_tensors(a, b):
            break
        n += 1
    return n


class _HandOn(nn.Module):
    """Stands in for the follower's embeddings: returns the leader's hidden states after the shared blocks."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, *_: object, **__: object) -> torch.Tensor:
        return self.hidden


@dataclass
class SharedLower:
    """A leader and a follower variant that compute their first ``blocks`` text blocks once per batch."""

    leader: Variant
    follower: Variant
    blocks: int

    def __post_init__(self) -> None:
        """Where the hook and the swap go, found once (``shared_blocks`` checked that both towers have them)."""
        leader_blocks, follower_blocks = _blocks(self.leader.retriever.towers.text_tower()), \
            _blocks(self.follower.retriever.towers.text_tower())
        assert leader_blocks is not None and follower_blocks is not None
        self._last_shared = leader_blocks[1][self.blocks - 1]
        path, self._follower_blocks = follower_blocks
        self._follower_tower = self.follower.retriever.towers.text_tower()
        parent_path, _, self._blocks_attr = path.rpartition(".")
        self._blocks_parent = self._follower_tower.get_submodule(parent_path)
        self._follower_own = nn.ModuleList(list(self._follower_blocks)[self.blocks:])

    def embed(self, items: list[EncodeInput]) -> tuple[np.ndarray, np.ndarray]:
        """Both variants' vectors for the same items: one collation, the shared blocks in the leader only."""
        batch = self.leader.retriever.collator()(items)
        with self._captured() as hidden:
            leader = self.leader.encode(batch)
        if not hidden:  # no text in the batch: the text towers did not run
            return leader, self.follower.encode(batch)
        with self._handed_on(hidden[0]):
            return leader, self.follower.encode(batch)

    @contextmanager
    def _captured(self) -> Iterator[list[torch.Tensor]]:
        out: list[torch.Tensor] = []
        hook = self._last_shared.register_forward_hook(lambda _m, _a, hidden: out.append(hidden))
        try:
            yield out
        finally:
            hook.remove()

    @contextmanager
    def _handed_on(self, hidden: torch.Tensor) -> Iterator[None]:
        """The follower's text tower without its embeddings and shared blocks, for one forward pass (the
        pair's batcher thread is the only one that runs either model)."""
        tower, embeddings = self._follower_tower, self._follower_tower.embeddings
        tower.embeddings = _HandOn(hidden)
        setattr(self._blocks_parent, self._blocks_attr, self._follower_own)
        try:
            yield
        finally:
            tower.embeddings = embeddings
            setattr(self._blocks_parent, self._blocks_attr, self._follower_blocks)
