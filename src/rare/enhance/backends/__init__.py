"""Generation backends behind one interface (see ``base``), built from the ``enhance`` params.

Heavy imports (torch, transformers) happen only when that backend is chosen. A VLM served by
vLLM, SGLang, LMDeploy or TGI is reached through ``openai`` (its own environment: vLLM's pins
cannot share one with Prefect's, see README "Running on real M-BEIR").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rare.config.enhance import EnhanceParams
from rare.enhance.backends.interface import Backend
from rare.hashing import code_digest


@dataclass(frozen=True)
class BackendSpec:
    """What the engine needs to know of a backend before (or without) loading its model."""

    make: Callable[[EnhanceParams], Backend]
    identity: Callable[[EnhanceParams], tuple[str, str]]  # (name, model) as the backend will report them
    settings: Callable[[EnhanceParams], dict[str, Any]]   # every setting besides prompt and input that changes output
    reads_src_content: bool = False  # reads the benchmark's scene annotation: src_content joins the cache key


def _standin(params: EnhanceParams) -> Backend:
    from rare.enhance.backends.standin import StandinBackend

    return StandinBackend(params.noise, params.seed)


def _standin_identity(params: EnhanceParams) -> tuple[str, str]:
    backend = _standin(params)
    return backend.name, backend.model


def _standin_settings(params: EnhanceParams) -> dict[str, Any]:
    # The stand-in's code is its model: an edit must not be served stale generations from the cache.
    from rare.benchmark import vocab
    from rare.enhance.backends import standin

    return {"seed": params.seed, "noise": params.noise.model_dump(), "code": code_digest(standin, vocab)}


def _transformers(params: EnhanceParams) -> Backend:
    from rare.enhance.backends.transformers import TransformersBackend

    t = params.transformers
    return TransformersBackend(params.model, device=t.device, dtype=t.dtype, max_pixels=params.max_pixels,
                               seed=params.seed)


def _openai(params: EnhanceParams) -> Backend:
    from rare.enhance.backends.openai import OpenAIBackend

    return OpenAIBackend(params.model, params.openai, max_pixels=params.max_pixels, seed=params.seed)


def _named(params: EnhanceParams) -> tuple[str, str]:
    return params.backend, params.model


BACKENDS: dict[str, BackendSpec] = {
    "standin": BackendSpec(_standin, _standin_identity, _standin_settings, reads_src_content=True),
    "transformers": BackendSpec(_transformers, _named, lambda p: {"seed": p.seed, "max_pixels": p.max_pixels,
                                                                  "dtype": p.transformers.dtype}),
    "openai": BackendSpec(_openai, _named, lambda p: {"seed": p.seed, "max_pixels": p.max_pixels,
                                                      "image_format": p.openai.image_format}),
}
# Backends whose output depends on the record's src_content: for them it is part of the input and of the cache key.
READS_SRC_CONTENT = frozenset(name for name, spec in BACKENDS.items() if spec.reads_src_content)


def _spec(params: EnhanceParams) -> BackendSpec:
    try:
        return BACKENDS[params.backend]
    except KeyError:
        raise ValueError(f"enhance.backend: unknown backend {params.backend!r}; allowed: {list(BACKENDS)}") from None


def backend_identity(params: EnhanceParams) -> tuple[str, str]:
    """(name, model) as the backend will report them, without loading a model."""
    return _spec(params).identity(params)


def generation_settings(params: EnhanceParams) -> dict[str, Any]:
    """Every setting besides the prompt and the input that changes what the backend writes."""
    return _spec(params).settings(params)


def make_backend(params: EnhanceParams) -> Backend:
    return _spec(params).make(params)
