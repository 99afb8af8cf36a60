"""What one embedded dataset declares about itself, so that adding a dataset is its module plus one
entry in ``rare.benchmark.datasets.EMBEDDED``.

The generator calls ``build``; the writer reads the TSV name and the instructions; ``rare.mbeir`` reads
``dataset`` (name, id, probe, headline k) so that every stage knows the dataset as it knows M-BEIR's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rare.mbeir import Dataset

if TYPE_CHECKING:
    from rare.benchmark.builder import Builder
    from rare.benchmark.world import Namer


@dataclass(frozen=True)
class BuildContext:
    """What a builder may read besides its own ``Builder``: the shared name source (entity names never
    collide across datasets) and the data params that shape one dataset only."""

    namer: Namer
    unseen_entities: float  # share of emblemkb's val/test queries on entities no train query shows


@dataclass(frozen=True)
class DatasetSpec:
    dataset: Dataset                                     # name, id (10+), probe, headline k
    tsv_name: str                                        # its name in M-BEIR's instructions TSV
    instructions: dict[int, tuple[str, str, str, str]]   # task id -> four task instructions
    build: Callable[[Builder, BuildContext], None]       # fills the builder with records and scenes
