"""The ``train_<variant>`` stages: their declarations, the ``rare train`` command, and the MLflow run
``train-<variant>`` (its Lightning logger, its timings, its registered model) around
``rare.train.fit.train_variant``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from rare.stages.command import (
    CorpusEnhOpt,
    CorpusModeOpt,
    DataOpt,
    ParamsOpt,
    QueriesEnhOpt,
    Variant,
    enhanced_for,
    run_stage,
)
from rare.stages.declare import PRETRAINED, RAW, Out, Stage, Step, enhanced_inputs
from rare.stages.variants import VARIANTS, TextMode

if TYPE_CHECKING:
    from rare.config.tracking import TrackingParams
    from rare.config.train import TrainParams

TRAIN = Step("train", "rare.stages.train:run_train", ("train",))
RUN_ENV = "RARE_TRAIN_RUN_ID"  # rank 0's MLflow run, inherited by the DDP workers Lightning starts


def trained(variant: str) -> Stage:
    loss = tuple(Out(f"metrics/loss/{variant}_{split}.json", cache=False) for split in ("train", "val"))
    metrics = f"metrics/train_{variant}.json"
    return Stage(f"train_{variant.replace('-', '_')}", TRAIN, (variant,), {"--data": RAW, **enhanced_inputs(variant)},
                 {"--out": f"models/{variant}", "--metrics": metrics, **VARIANTS[variant].options()}, needs=(PRETRAINED,),
                 outs=(Out(f"models/{variant}"), *loss, Out(metrics, cache=False)))


def declared() -> Iterator[Stage]:
    yield from (trained(v) for v in VARIANTS)


def _fit_tracked(variant: str, data: Path, out: Path, params: TrainParams, tracking: TrackingParams,
                 corpus_enhanced: Path | None, queries_enhanced: Path | None, callbacks: Sequence[Any],
                 metrics: Path | None, run_id: str | None) -> Path:
    """The training with its MLflow run ``run_id`` (None: untracked): the run is the Lightning logger; rank 0
    logs the timings and registers the export once it is written."""
    from rare.train.fit import train_variant

    logger: Any = False
    if run_id:
        from pytorch_lightning.loggers import MLFlowLogger

        logger = MLFlowLogger(experiment_name=tracking.experiment, tracking_uri=tracking.tracking_uri, run_id=run_id)
        os.environ[RUN_ENV] = run_id  # the DDP workers Lightning starts log into the same run
    try:
        result = train_variant(variant, data, out, params, corpus_enhanced, queries_enhanced, callbacks, metrics,
                               logger)
    finally:
        os.environ.pop(RUN_ENV, None)
    if run_id and result.meta is not None:
        from rare import registry
        from rare.model import load_retriever

        client = logger.experiment
        for key, value in result.timings.items():
            client.log_metric(run_id, key, value)
        # The fingerprint of the export as evaluation loads it, which is how evaluation finds this version.
        registry.log_retriever(run_id, result.out, variant, load_retriever(result.out).fingerprint,
                               result.example_image)
    return result.out


def train_tracked(variant: str, data: Path, out: Path, params: TrainParams, tracking: TrackingParams,
                  corpus_enhanced: Path | None = None, queries_enhanced: Path | None = None,
                  callbacks: Sequence[Any] = (), metrics: Path | None = None) -> Path:
    """``rare.train.fit.train_variant`` inside the MLflow run ``train-<variant>``: rank 0 opens it before any
    work and ends it with the outcome; the DDP workers Lightning starts log into it (``RUN_ENV``)."""
    from rare.mlflow_runs import child_run
    from rare.runtime import is_rank_zero_process

    args = (variant, Path(data), Path(out), params, tracking, corpus_enhanced, queries_enhanced, callbacks, metrics)
    if not tracking.enabled or RUN_ENV in os.environ or not is_rank_zero_process():
        return _fit_tracked(*args, os.environ.get(RUN_ENV) if tracking.enabled else None)
    # rare.seed_group: one value per variant, so MLflow lists a variant's seeds side by side (filter or group on it)
    tags = {"rare.variant": variant, "rare.seed": str(params.seed), "rare.seed_group": f"train-{variant}"}
    with child_run(tracking, "train", f"train-{variant}", tags, data=data, active=False) as run_id:
        return _fit_tracked(*args, run_id)


def run_train(variant: str, data: Path, out: Path, params_file: Path, corpus_enhanced: Path | None = None,
              queries_enhanced: Path | None = None, metrics: Path | None = None, seed: int | None = None,
              corpus_mode: TextMode | None = None) -> Path:
    """Train ``variant`` on ``data`` and export the retriever to ``out``; a retry resumes from the last checkpoint.
    ``seed`` overrides ``train.seed`` (a seed study's replica), ``corpus_mode`` ``train.text_mode.corpus`` (the
    variant's own way of joining a candidate's enhancement to its text)."""
    from rare import stageflow
    from rare.config import load_section

    params = load_section("train", params_file)
    if seed is not None:
        params = params.model_copy(update={"seed": seed})
    if corpus_mode is not None:
        params = params.model_copy(update={"text_mode": params.text_mode.model_copy(update={"corpus": corpus_mode})})
    exported = train_tracked(variant, Path(data), Path(out), params, load_section("tracking", params_file),
                             corpus_enhanced, queries_enhanced, metrics=metrics)
    stageflow.logger().info(f"retriever for variant {variant!r} exported to {exported}")
    return exported


def train(
    variant: Annotated[Variant, typer.Argument(help="Ablation variant.")],
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Export directory: safetensors weights, configs, tokenizer, "
                                      "meta.json (replaced atomically).")],
    corpus_enhanced: CorpusEnhOpt = None,
    queries_enhanced: QueriesEnhOpt = None,
    corpus_mode: CorpusModeOpt = None,
    params_file: ParamsOpt = Path("params.yaml"),
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="Also write training figures (wall time, "
                                                    "steps, val loss) here, for DVC.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override train.seed (a seed study's replica; "
                                                "`make study`).", min=0)] = None,
) -> None:
    """Train the retriever for one variant (params `train:`); resumes from its last checkpoint after a kill."""
    corpus_enhanced, queries_enhanced = enhanced_for(variant, corpus_enhanced, queries_enhanced)
    run_stage(TRAIN, f"train-{variant}", variant=variant, data=data, out=out, params_file=params_file,
              corpus_enhanced=corpus_enhanced, queries_enhanced=queries_enhanced, metrics=metrics, seed=seed,
              corpus_mode=corpus_mode)


def mount(app: typer.Typer) -> None:
    app.command(TRAIN.command)(train)
