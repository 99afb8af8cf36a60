"""In-batch contrastive loss over the global batch.

Under DDP each rank gathers every rank's embeddings *with gradients* (the backward sums every
rank's gradient and returns each rank its own rows), and every rank computes the same loss on
the global batch. DDP then averages the parameter gradients over ranks, which gives
exactly the gradient of a single process on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every rank's gradient and hands each rank its own slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (dist.get_rank() * x.shape[0], x.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        total = grad.contiguous().clone()  # never reduce into a buffer autograd may still hold
        dist.all_reduce(total)
        start, n = ctx.rows
        return total[start:start + n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def contrastive_loss(query: torch.Tensor, cand: torch.Tensor, scale: torch.Tensor,
                     symmetric: bool = False, negatives: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of query i against candidate i, all other candidates in the global batch as negatives;
    ``negatives`` (gathered likewise) are extra columns after the candidates (LamRA's hard-negative block)."""
    q, c = gather_with_grad(query), gather_with_grad(cand)
    if negatives is not None:
        if symmetric:
            raise ValueError("hard negatives are query->candidate columns: not with the symmetric loss")
        c = torch.cat([c, gather_with_grad(negatives)])
    with torch.autocast(q.device.type, enabled=False):  # bf16 logits would blur a 100x-scaled softmax
        logits = scale.float() * q.float() @ c.float().T
        labels = torch.arange(q.shape[0], device=q.device)
        loss = F.cross_entropy(logits, labels)
        if symmetric:
            loss = (loss + F.cross_entropy(logits.T, labels)) / 2
    return loss
