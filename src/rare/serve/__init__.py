"""``rare serve``: search trained indexes from a web page and a JSON API, two variants side by side.

index     load once: retrievers (with exact public-module speed-ups), the evaluation's cached candidate
          embeddings (memory-mapped), records
enhance   the configured enhancement backend, run per query as the enhancement stage runs it
batch     micro-batching: one forward pass per model for all the queries waiting for it
service   validate, enhance, embed, search; typed response bodies
app       FastAPI routes, error bodies, the keep-alive cap, the static page (static/) and offline API docs
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from rare.config import load_section
from rare.serve.index import load_catalog, load_variant
from rare.serve.live_enhance import LiveEnhancer
from rare.serve.service import Limits, Service

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_VARIANTS = ("none", "both")
SERVICE_ENV = "RARE_SERVE_SERVICE"  # a ServiceSpec as JSON, for worker processes


def build_service(variants: Sequence[str], models: Path, data: Path, corpus_enhanced: Path | None,
                  queries_enhanced: Path | None, params_file: Path, limits: Limits = Limits()) -> Service:  # noqa: B008
    """Everything loaded once; models come from ``<models>/<variant>``, parameters from params.yaml."""
    if not 1 <= len(variants) <= 2 or len(set(variants)) != len(variants):
        raise ValueError(f"--variant: serve one variant or two different ones, got {list(variants)}")
    params = load_section("evaluate", params_file)
    loaded = {v: load_variant(v, models / v, data, params, corpus_enhanced, queries_enhanced) for v in variants}
    catalog = load_catalog(next(iter(loaded.values())).plan, corpus_enhanced)
    return Service(loaded, catalog, LiveEnhancer(load_section("enhance", params_file)), limits)


class ServiceSpec(BaseModel):
    """What ``rare serve`` builds its service from; with ``--workers N`` it travels to each worker process
    through the environment (uvicorn starts workers by import string, so no object can be handed over)."""

    variants: list[str]
    models: Path
    data: Path
    corpus_enhanced: Path | None
    queries_enhanced: Path | None
    params_file: Path
    torch_threads: int = 1

    def build(self) -> Service:
        return build_service(self.variants, self.models, self.data, self.corpus_enhanced, self.queries_enhanced,
                             self.params_file)

    def to_env(self) -> None:
        os.environ[SERVICE_ENV] = self.model_dump_json()

    @classmethod
    def from_env(cls) -> ServiceSpec:
        return cls.model_validate_json(os.environ[SERVICE_ENV])


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker process (``rare serve --workers N``). On a CPU one process runs
    the Python of both models' forward passes and the HTTP layer under one interpreter lock; a worker
    per core runs them side by side. Each worker loads the index itself: the embeddings are memory-mapped,
    so the workers share their pages."""
    import torch
    from threadpoolctl import threadpool_limits

    from rare.serve.app import create_app

    spec = ServiceSpec.from_env()
    torch.set_num_threads(spec.torch_threads)
    threadpool_limits(spec.torch_threads)  # the exact search's BLAS (rare.evaluate.search) too
    return create_app(spec.build())
