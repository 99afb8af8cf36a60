"""GradCache (Gao et al. 2021, as VLM2Vec runs it): the contrastive step of a large global batch in the memory of
one sub-batch.

1. embed every chunk of queries and candidates without a graph, recording each chunk's RNG state; the last
   chunk is embedded *with* its graph instead (it is the one chunk whose graph can be kept: nothing runs after it
   but the loss);
2. compute the (gathered) loss on the detached embeddings plus that live chunk and backpropagate it: this caches
   dL/d(rep) for every other chunk and already gives the model the live chunk's share of the gradient (a learnt
   temperature gets its gradient here too);
3. re-embed each other chunk with a graph under its recorded RNG state (same dropout draws) and backpropagate the
   surrogate ``sum(rep * cached_grad)``, which gives the model exactly the full-batch gradient.

The cost over the plain step is one extra forward without a graph for every chunk but the last; peak memory is
still one chunk's graph (the live chunk's graph is freed by the loss's backward before step 3 starts).

``prepare`` (optional) adds to a chunk, once and without a graph, what both of its passes share and what needs no
gradient: the ``vlm`` family's frozen vision tower output. Step 3 then runs only the trainable part again, which
is most of what GradCache costs over the plain step on a model whose vision tower is a large share of the pass.

Under DDP the parameter gradients are synchronised on the last backward only (``no_sync`` for the others,
forwards included: DDP decides at forward time whether the following backward reduces).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RngState:
    cpu: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls) -> RngState:
        return cls(torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda)


@contextmanager
def replaying(state: RngState) -> Iterator[None]:
    """Run under ``state``, then put the generator back where it was."""
    after = RngState.capture()
    state.restore()
    try:
        yield
    finally:
        after.restore()


def grad_cache_step(embed: Callable[[Batch], torch.Tensor], query: Batch, cand: Batch,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], chunk: int,
                    split: Callable[[Batch, int], list[Batch]],
                    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                    no_sync: Callable[[], AbstractContextManager] = nullcontext,
                    prepare: Callable[[Batch], Batch] | None = None,
                    loss_params: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
    """Accumulate the full-batch gradient of ``loss_fn(embed(query), embed(cand))`` into the parameters and
    return the (detached) loss. ``backward`` is the trainer's (Lightning's ``manual_backward``).

    ``loss_params`` returns a tensor computed from the parameters that only the loss uses (a learnt temperature:
    the retriever's ``scale``). Their gradient comes from the loss's backward, which runs under ``no_sync``; the
    last backward adds the tensor times 0, so that DDP's reducer sees them in the synchronised backward and
    averages their gradient with the rest (without it their bucket never completes, and no rank's gradient is
    averaged at all)."""
    sides = [split(query, chunk), split(cand, chunk)]
    if prepare is not None:
        with torch.no_grad():
            sides = [[prepare(sub) for sub in chunks] for chunks in sides]
    jobs = [(i, j) for i in (0, 1) for j in range(len(sides[i]))]
    states: dict[tuple[int, int], RngState] = {}
    parts: list[list[torch.Tensor]] = [[], []]
    with no_sync():
        for i, j in jobs[:-1]:
            with torch.no_grad():
                states[i, j] = RngState.capture()
                parts[i].append(embed(sides[i][j]))
        live = embed(sides[1][-1])  # graph kept: the loss's backward reaches the model through it
        cached = [torch.cat(p).detach().requires_grad_(True) if p else None for p in parts]
        # the live chunk is the last candidate chunk; the query side is all cached
        cands = live if cached[1] is None else torch.cat([cached[1], live])
        loss = loss_fn(cached[0], cands)
        backward(loss)
    grads = {side: _rows(cached[side].grad, sides[side][:len(parts[side])])
             for side in (0, 1) if cached[side] is not None}
    rerun = jobs[:-1]
    for n, (i, j) in enumerate(rerun):
        with replaying(states[i, j]), (no_sync() if n < len(rerun) - 1 else nullcontext()):
            rep = embed(sides[i][j])
            surrogate = (rep * grads[i][j].to(rep.dtype)).sum()
            if n == len(rerun) - 1 and loss_params is not None:
                surrogate = surrogate + 0.0 * loss_params().sum()
            backward(surrogate)
    return loss.detach()


def _rows(grad: torch.Tensor, chunks: list[Batch]) -> list[torch.Tensor]:
    return list(torch.split(grad, [int(c["size"]) for c in chunks]))
