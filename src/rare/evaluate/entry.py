"""What `rare evaluate <name>` runs: one row of the ablation matrix (``rare.evaluate.stage``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rare.config import load_section


def run(name: str, model: Path, inputs: str, data: Path, out: Path, params_file: Path,
        corpus_enhanced: Path | None = None, queries_enhanced: Path | None = None) -> dict[str, Any]:
    """Evaluate the retriever in ``model`` on the ``inputs`` variant; writes ``out`` and returns its metrics.
    A retry is cheap: embeddings are cached by shard, so it resumes where the failure struck. Launched by
    ``torchrun`` (``WORLD_SIZE`` > 1), every rank embeds a share of the shards and rank 0 does the rest."""
    started = time.time()  # the MLflow run spans loading the model too
    from rare.evaluate.ranks import join_from_env
    from rare.evaluate.stage import embed_only, evaluate, resolve_device
    from rare.model import load_retriever

    params = load_section("evaluate", params_file)
    ranks, device = join_from_env(resolve_device(params.device))  # under torchrun: one rank of several
    retriever = load_retriever(model, device=device)
    if not ranks.leader:  # the other ranks share the embedding; rank 0 searches, scores and tracks
        embed_only(name, retriever, inputs, Path(data), params, corpus_enhanced, queries_enhanced)
        return {"score": {}}
    return evaluate(name, retriever, inputs, Path(data), Path(out), params, corpus_enhanced, queries_enhanced,
                    tracking=load_section("tracking", params_file), model=Path(model), started_at=started)
