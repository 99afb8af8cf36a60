"""Data stage parameters: generate the embedded benchmark, or point at a real M-BEIR root."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rare.config.base import Section


class BenchmarkSizes(Section):
    """Sizes per dataset-task of the embedded benchmark (8 dataset-tasks)."""

    train: int = Field(ge=1)  # training queries
    val: int = Field(ge=1)
    test: int = Field(ge=1)
    pool: int = Field(ge=1)  # local pool; grows when its val+test queries need more candidates


# default: ~9.0k candidates, 4.8k train / 2.4k test queries, ~12.5k 64x64 images: seconds to generate, and
# the whole pipeline (4 trainings, 7 evaluations) fits ~10 min on 2 cores. 300 test queries per dataset-task
# (not 200) keep the 95% interval of every M-BEIR score change within +-2 points (docs/evidence.md). large: ~100k candidates, for benchmarks.
PRESETS: dict[str, BenchmarkSizes] = {
    "tiny": BenchmarkSizes(train=12, val=4, test=8, pool=32),
    "default": BenchmarkSizes(train=600, val=64, test=300, pool=800),
    "large": BenchmarkSizes(train=6000, val=500, test=2000, pool=12500),
}


class DataParams(Section):
    source: Literal["embedded", "mbeir"] = "embedded"
    mbeir_root: str | None = None  # required when source == "mbeir"
    seed: int = 0
    # embedded benchmark only
    preset: Literal["tiny", "default", "large"] = "default"
    sizes: BenchmarkSizes | None = None  # all four sizes, overriding the preset's
    image_size: int = Field(64, ge=32, le=512)
    unseen_entities: float = Field(0.5, ge=0.0, le=1.0)  # share of emblemkb val/test queries on entities no train query shows
    workers: int = Field(0, ge=0)  # rendering processes; 0 = one per core (at most 4), used for large runs only

    @model_validator(mode="after")
    def _root_for_mbeir(self) -> DataParams:
        if self.source == "mbeir" and not self.mbeir_root:
            raise ValueError("mbeir_root must be set when source is 'mbeir'")
        return self

    @property
    def resolved_sizes(self) -> BenchmarkSizes:
        return self.sizes or PRESETS[self.preset]
