"""What `rare train <variant>` runs: one retriever per ablation variant (``rare.train.stage``)."""

from __future__ import annotations

from pathlib import Path

from rare import stageflow
from rare.config import load_section


def run(variant: str, data: Path, out: Path, params_file: Path, corpus_enhanced: Path | None = None,
        queries_enhanced: Path | None = None, metrics: Path | None = None, seed: int | None = None) -> Path:
    """Train ``variant`` on ``data`` and export the retriever to ``out``; a retry resumes from the last checkpoint.
    ``seed`` overrides ``train.seed`` (a seed study's replica)."""
    from rare.train.stage import train_variant

    params = load_section("train", params_file)
    if seed is not None:
        params = params.model_copy(update={"seed": seed})
    out = train_variant(variant, Path(data), Path(out), params,
                        load_section("tracking", params_file), corpus_enhanced, queries_enhanced, metrics=metrics)
    stageflow.logger().info(f"retriever for variant {variant!r} exported to {out}")
    return out
