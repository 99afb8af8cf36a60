"""GradCache (Gao et al. 2021, as VLM2Vec runs it): the contrastive step of a large global batch in the memory of
one sub-batch.

1. embed every chunk of queries and candidates without a graph, recording each chunk's RNG state;
2. compute the (gathered) loss on the detached embeddings and backpropagate it to them only, caching dL/d(rep)
   (a learnt temperature gets its gradient here);
3. re-embed each chunk with a graph under its recorded RNG state (same dropout draws) and backpropagate the
   surrogate ``sum(rep * cached_grad)``, which gives the model exactly the full-batch gradient.

``prepare`` (optional) adds to a chunk, once and without a graph, what both of its passes share and what needs no
gradient: the ``vlm`` family's frozen vision tower output. Step 3 then runs only the trainable part again, which
is most of what GradCache costs over the plain step on a model whose vision tower is a large share of the pass.

Under DDP the parameter gradients are synchronised on the last chunk only (``no_sync`` for the others).
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
                    prepare: Callable[[Batch], Batch] | None = None) -> torch.Tensor:
    """Accumulate the full-batch gradient of ``loss_fn(embed(query), embed(cand))`` into the parameters and
    return the (detached) loss. ``backward`` is the trainer's (Lightning's ``manual_backward``)."""
    sides = [split(query, chunk), split(cand, chunk)]
    states: list[list[RngState]] = [[], []]
    reps: list[torch.Tensor] = []
    for i, chunks in enumerate(sides):
        parts = []
        for j, sub in enumerate(chunks):
            with torch.no_grad():
                if prepare is not None:
                    sub = chunks[j] = prepare(sub)
                states[i].append(RngState.capture())
                parts.append(embed(sub))
        reps.append(torch.cat(parts).detach().requires_grad_(True))
    loss = loss_fn(reps[0], reps[1])
    backward(loss)
    cached = [r.grad for r in reps]
    jobs = [(sub, state, grad) for i in (0, 1)
            for sub, state, grad in zip(sides[i], states[i], _rows(cached[i], sides[i]), strict=True)]
    for n, (sub, state, grad) in enumerate(jobs):
        with replaying(state), (no_sync() if n < len(jobs) - 1 else nullcontext()):
            rep = embed(sub)
            backward((rep * grad.to(rep.dtype)).sum())
    return loss.detach()


def _rows(grad: torch.Tensor, chunks: list[Batch]) -> list[torch.Tensor]:
    return list(torch.split(grad, [int(c["size"]) for c in chunks]))
