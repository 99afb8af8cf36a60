"""What `rare evaluate <name>` runs: one row of the ablation matrix (``rare.evaluate.stage``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rare.config import load_section


def run(name: str, model: Path, inputs: str, data: Path, out: Path, params_file: Path,
        corpus_enhanced: Path | None = None, queries_enhanced: Path | None = None) -> dict[str, Any]:
    """Evaluate the retriever in ``model`` on the ``inputs`` variant; writes ``out`` and returns its metrics.
    A retry is cheap: embeddings are cached by shard, so it resumes where the failure struck."""
    started = time.time()  # the MLflow run spans loading the model too
    from rare.evaluate.stage import evaluate, resolve_device
    from rare.model import load_retriever

    params = load_section("evaluate", params_file)
    retriever = load_retriever(model, device=resolve_device(params.device))
    return evaluate(name, retriever, inputs, Path(data), Path(out), params, corpus_enhanced, queries_enhanced,
                    tracking=load_section("tracking", params_file), model=Path(model), started_at=started)
