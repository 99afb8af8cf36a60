"""Generation backends behind one interface (see ``base``), built from the ``enhance`` params.

Heavy imports (torch, transformers) happen only when that backend is chosen. A VLM served by
vLLM, SGLang, LMDeploy or TGI is reached through ``openai`` (its own environment: vLLM's pins
cannot share one with Prefect's, see README "Running on real M-BEIR").
"""

from __future__ import annotations

from typing import Any

from rare.config.enhance import EnhanceParams
from rare.enhance.backends.base import Backend
from rare.hashing import code_digest

# Backends whose output depends on the record's src_content (the stand-in reads the scene
# annotation): for them, src_content is part of the input and so of the cache key.
READS_SRC_CONTENT = frozenset({"standin"})


def _standin(params: EnhanceParams) -> Backend:
    from rare.enhance.backends.standin import StandinBackend

    return StandinBackend(params.noise, params.seed)


def backend_identity(params: EnhanceParams) -> tuple[str, str]:
    """(name, model) as the backend will report them, without loading a model."""
    if params.backend == "standin":
        backend = _standin(params)
        return backend.name, backend.model
    return params.backend, params.model


def generation_settings(params: EnhanceParams) -> dict[str, Any]:
    """Every setting besides the prompt and the input that changes what the backend writes."""
    if params.backend == "standin":
        # The stand-in's code is its model: an edit must not be served stale generations from the cache.
        from rare.benchmark import vocab
        from rare.enhance.backends import standin

        return {"seed": params.seed, "noise": params.noise.model_dump(), "code": code_digest(standin, vocab)}
    if params.backend == "openai":
        o = params.openai
        return {"seed": params.seed, "max_pixels": params.max_pixels, "image_format": o.image_format}
    return {"seed": params.seed, "max_pixels": params.max_pixels, "dtype": params.transformers.dtype}


def make_backend(params: EnhanceParams) -> Backend:
    if params.backend == "standin":
        return _standin(params)
    if params.backend == "transformers":
        from rare.enhance.backends.transformers import TransformersBackend

        t = params.transformers
        return TransformersBackend(params.model, device=t.device, dtype=t.dtype, max_pixels=params.max_pixels,
                                   seed=params.seed)
    if params.backend == "openai":
        from rare.enhance.backends.openai import OpenAIBackend

        return OpenAIBackend(params.model, params.openai, max_pixels=params.max_pixels, seed=params.seed)
    raise ValueError(f"enhance.backend: unknown backend {params.backend!r}; allowed: ['standin', 'transformers', 'openai']")
