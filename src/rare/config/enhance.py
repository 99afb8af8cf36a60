"""Enhancement stage parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rare.config.base import Section


class StandinNoise(Section):
    """Noise knobs of the offline stand-in, to see how VLM quality moves retrieval."""

    drop_detail: float = Field(0.0, ge=0.0, le=1.0)      # each visual detail is left out with this probability
    wrong_attribute: float = Field(0.0, ge=0.0, le=1.0)  # each attribute is replaced by a wrong one
    fail_entity: float = Field(0.0, ge=0.0, le=1.0)      # an entity is described generically, not named


class EnhanceParams(Section):
    backend: Literal["standin", "transformers", "vllm"] = "standin"
    model: str = "standin"
    prompt_version: str = "v1"
    shard_size: int = Field(1024, ge=1)
    batch_size: int = Field(32, ge=1)
    max_failure_rate: float = Field(0.05, ge=0.0, le=1.0)
    seed: int = 0
    noise: StandinNoise = StandinNoise()
