"""The ``eval_<name>`` stages (every variant, the inference-only rows, zero-shot): their declarations, the
``rare evaluate`` command, and the MLflow run ``eval-<name>`` around ``rare.evaluate.protocol.evaluate``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rare.stages.command import (
    CorpusEnhOpt,
    CorpusModeOpt,
    DataOpt,
    InDir,
    ParamsOpt,
    QueriesEnhOpt,
    Variant,
    enhanced_for,
    run_stage,
)
from rare.stages.declare import RAW, ZERO_SHOT_MODEL, Out, Stage, Step, enhanced_inputs
from rare.stages.variants import BASELINE, INFERENCE_ONLY, VARIANTS, ZERO_SHOT, TextMode

if TYPE_CHECKING:
    from rare.config.evaluate import EvaluateParams
    from rare.config.tracking import TrackingParams

EVALUATE = Step("evaluate", "rare.stages.evaluate:run_evaluate", ("evaluate",))


def evaluation(name: str, model: str, inputs: str, out: str | None = None, outs: tuple[Out, ...] | None = None,
               stage_name: str | None = None) -> Stage:
    """``rare evaluate <name>``: ``model`` on ``inputs``' data into ``out`` (``eval/<name>``)."""
    out = out or f"eval/{name}"
    outs = outs if outs is not None else (
        Out(f"{out}/runs"), Out(f"{out}/info.json"), Out(f"{out}/metrics.json", cache=False),
        Out(f"{out}/headline.json", cache=False), Out(f"{out}/scores.json", cache=False, kind="metrics"))
    return Stage(stage_name or f"eval_{name.replace('-', '_')}", EVALUATE, (name,),
                 {"--model": model, "--data": RAW, **enhanced_inputs(inputs)},
                 {"--inputs": inputs, "--out": out, **VARIANTS[inputs].options()},
                 outs=outs)


def declared() -> Iterator[Stage]:
    yield evaluation(ZERO_SHOT, ZERO_SHOT_MODEL, BASELINE)
    yield from (evaluation(v, f"models/{v}", v) for v in VARIANTS)
    yield from (evaluation(f"infer-{v}", f"models/{BASELINE}", v) for v in INFERENCE_ONLY)


def run_evaluate(name: str, model: Path, inputs: str, data: Path, out: Path, params_file: Path,
                 corpus_enhanced: Path | None = None, queries_enhanced: Path | None = None,
                 corpus_mode: TextMode | None = None) -> dict[str, Any]:
    """Evaluate the retriever in ``model`` on the ``inputs`` variant; writes ``out`` and returns its metrics.
    A retry is cheap: embeddings are cached by shard, so it resumes where the failure struck. Launched by
    ``torchrun`` (``WORLD_SIZE`` > 1), every rank embeds a share of the shards and rank 0 does the rest.
    The MLflow run ``eval-<name>`` spans the evaluation, backdated to include loading the model."""
    started = time.time()
    from rare.config import load_section
    from rare.evaluate.protocol import embed_only, resolve_device
    from rare.evaluate.ranks import join_from_env
    from rare.model import load_retriever

    params = load_section("evaluate", params_file)
    ranks, device = join_from_env(resolve_device(params.device))  # under torchrun: one rank of several
    retriever = load_retriever(model, device=device)
    if not ranks.leader:  # the other ranks share the embedding; rank 0 searches, scores and tracks
        embed_only(name, retriever, inputs, Path(data), params, corpus_enhanced, queries_enhanced, corpus_mode)
        return {"score": {}}
    return evaluate_tracked(name, retriever, inputs, Path(data), Path(out), params, corpus_enhanced, queries_enhanced,
                            load_section("tracking", params_file), Path(model), started, corpus_mode)


def evaluate_tracked(name: str, retriever: Any, inputs: str, data: Path, out: Path, params: EvaluateParams,
                     corpus_enhanced: Path | None, queries_enhanced: Path | None, tracking: TrackingParams,
                     model: Path | None = None, started_at: float | None = None,
                     corpus_mode: TextMode | None = None) -> dict[str, Any]:
    """``rare.evaluate.protocol.evaluate`` inside the MLflow run ``eval-<name>``, which ends with its outcome;
    ``started_at`` (``time.time()``) backdates its start to work done before, such as loading the model."""
    from rare.evaluate.protocol import evaluate as evaluate_protocol
    from rare.evaluate.protocol import regime_of
    from rare.mlflow_runs import child_run

    model_variant = retriever.meta.variant
    tags = {"rare.variant": inputs, "rare.model_variant": model_variant, "rare.regime": regime_of(model_variant, inputs)}
    with child_run(tracking, "evaluate", f"eval-{name}", tags, data=data, started_at=started_at) as run_id:
        return evaluate_protocol(name, retriever, inputs, data, out, params, corpus_enhanced, queries_enhanced,
                                 tracked=bool(run_id), model=model, corpus_mode=corpus_mode)


def evaluate(
    name: Annotated[str, typer.Argument(help="Evaluation name, e.g. none, corpus, infer-corpus.")],
    model: Annotated[Path, typer.Option("--model", help="Retriever directory exported by `rare train`.", **InDir)],
    inputs: Annotated[Variant, typer.Option("--inputs", help="Input variant: which sides read enhanced text.")],
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Output directory (metrics.json, info.json, runs/).")],
    corpus_enhanced: CorpusEnhOpt = None,
    queries_enhanced: QueriesEnhOpt = None,
    corpus_mode: CorpusModeOpt = None,
    params_file: ParamsOpt = Path("params.yaml"),
) -> None:
    """Evaluate one model on one input variant by the M-BEIR protocol (local and global pools)."""
    corpus_enhanced, queries_enhanced = enhanced_for(inputs, corpus_enhanced, queries_enhanced)
    # The stage logs its scores once (in its flow run's log too); they are not printed again here.
    run_stage(EVALUATE, f"evaluate-{name}", name=name, model=model, inputs=inputs, data=data, out=out,
              params_file=params_file, corpus_enhanced=corpus_enhanced, queries_enhanced=queries_enhanced,
              corpus_mode=corpus_mode)


def mount(app: typer.Typer) -> None:
    app.command(EVALUATE.command)(evaluate)
