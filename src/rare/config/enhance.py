"""Enhancement stage parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rare.config.base import Section


class EnhanceParams(Section):
    backend: Literal["standin", "transformers", "vllm"] = "standin"
    model: str = "standin"
    prompt_version: str = "v1"
    shard_size: int = Field(1024, ge=1)
    batch_size: int = Field(32, ge=1)
    max_failure_rate: float = Field(0.05, ge=0.0, le=1.0)
    seed: int = 0
