"""The processes one evaluation embeds with: this process's rank among them, and the group's collectives.

``torchrun`` (or any launcher that sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``) starts one process per GPU or per CPU slot, on one node or many; ``join_from_env`` joins
them into one ``torch.distributed`` group (nccl on CUDA, gloo on CPU). Without those variables there is
one rank and nothing here communicates, so a single-process run pays nothing for it.

Every rank builds the same item list and the same shards (``rare.evaluate.embed``); rank 0 decides what
is left to do and tells the others, each rank embeds every ``world``-th unfinished shard with the same
batches a single process would use, and rank 0 assembles the entry. The vectors are therefore bit for
bit a single process's, whatever the number of ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        """The initialised default group, else one rank."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def from_leader(self, value: T) -> T:
        """Rank 0's ``value`` on every rank: decisions read from the file system are made once, so no two
        ranks can see a different set of finished shards."""
        if self.world == 1:
            return value
        box: list[Any] = [value if self.leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def share(self, todo: list[int]) -> list[int]:
        """This rank's part of ``todo``: every ``world``-th, so ranks alternate along the length-sorted shards."""
        return todo[self.rank::self.world]


def join_from_env(device: str, timeout_s: float = 1800.0) -> tuple[Ranks, str]:
    """Join the launcher's group when ``WORLD_SIZE`` > 1; returns the ranks and this rank's device
    (``cuda:<LOCAL_RANK>`` on CUDA). A second call, or a group already set up by the caller, is reused."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks.current(), device
    if device.startswith("cuda"):
        import torch

        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(seconds=timeout_s))
    return Ranks.current(), device
