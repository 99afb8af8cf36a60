"""Evaluation stage parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rare.config.base import Section


class EvaluateParams(Section):
    split: Literal["val", "test"] = "test"
    pools: list[Literal["local", "global"]] = ["local", "global"]
    search_backend: Literal["torch", "faiss"] = "torch"
    top_k: int = Field(50, ge=10, le=1000)
    query_batch: int = Field(1024, ge=1)
    cand_chunk: int = Field(262_144, ge=1024)
    embed_batch: int = Field(128, ge=1)
    num_workers: int = Field(0, ge=0)
    instruction_seed: int = 0
