"""Evaluation stage parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rare.config.base import Section


class EvaluateParams(Section):
    split: Literal["val", "test"] = "test"
    pools: list[Literal["local", "global"]] = Field(["local", "global"], min_length=1)
    search_backend: Literal["torch", "faiss"] = "torch"  # faiss: IndexFlatIP per chunk, on GPUs when faiss has them
    device: Literal["auto", "cpu", "cuda"] = "auto"      # embedding and torch search
    # Embedding arithmetic. auto = bf16 autocast on CUDA and on CPUs with native bf16 (about 1.5-2x faster
    # on this CPU; cosine to fp32 embeddings > 0.9999), else fp32. Part of the embedding cache key.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    top_k: int = Field(50, ge=10, le=1000)               # retrieved per query; must cover R@50 for fashion tasks
    query_batch: int = Field(1024, ge=1)                 # queries per score block
    cand_chunk: int = Field(65_536, ge=1024)             # candidates read and scored at a time (bounds memory)
    embed_batch: int = Field(128, ge=1)
    shard_rows: int = Field(65_536, ge=1)                # embedding rows per resumable shard
    num_workers: int = Field(0, ge=0)                    # DataLoader workers decoding images
    # Outside DVC outputs, so reruns and the inference-only rows reuse embeddings.
    cache_dir: str = ".cache/rare/embeddings"
