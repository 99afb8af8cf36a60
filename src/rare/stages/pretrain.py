"""The ``pretrain`` and ``zero_shot`` stages: their declarations, the ``rare pretrain`` and ``rare zero-shot``
commands, the pretraining's MLflow run and DVC figures (``rare.pretrain.tower.pretrain``), and the zero-shot
export (``rare.pretrain.tower.export_zero_shot``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rare.stages.command import ParamsOpt, run_stage
from rare.stages.declare import PRETRAINED, ZERO_SHOT_MODEL, Out, Stage, Step

# Pretraining serves the embedded dual encoder only: the committed checkpoint (cache: false) stays up to
# date when another profile is selected.
PRETRAIN = Step("pretrain", "rare.stages.pretrain:run_pretrain", ("pretrain",), profiled=False)
ZERO_SHOT_EXPORT = Step("zero-shot", "rare.stages.pretrain:run_zero_shot", ("train",))


def declared() -> Iterator[Stage]:
    yield Stage("pretrain", PRETRAIN, (PRETRAINED,), options={"--metrics": "metrics/pretrain.json"},
                outs=(Out(PRETRAINED, cache=False), Out("metrics/loss/pretrain.json", cache=False),
                      Out("metrics/pretrain.json", cache=False)))
    yield Stage("zero_shot", ZERO_SHOT_EXPORT, options={"--out": ZERO_SHOT_MODEL}, needs=(PRETRAINED,),
                outs=(Out(ZERO_SHOT_MODEL),))


def run_pretrain(out: Path, params_file: Path, metrics: Path | None = None) -> dict[str, Any]:
    """Pretrain the vision tower (params `pretrain:`) into ``out``; a retry resumes from the last
    checkpoint in pretrain.cache_dir."""
    import mlflow

    from rare import stageflow
    from rare.config import load_section
    from rare.mlflow_runs import child_run
    from rare.pretrain.tower import pretrain, write_pretrain_metrics

    params = load_section("pretrain", params_file)
    with child_run(load_section("tracking", params_file), "pretrain", "pretrain") as run:
        on_step = (lambda step, loss: mlflow.log_metric("pretrain/loss", loss, step=step)) if run else None
        figures = pretrain(Path(out), params, on_step)
        if run:
            mlflow.log_params({"scenes": params.scenes, "steps": params.steps, "batch_size": params.batch_size,
                               "lr": params.optim.lr, "vision": json.dumps(params.model.vision.config),
                               "text": params.model.text.pretrained})
            mlflow.log_metrics({k: float(v) for k, v in figures.items() if isinstance(v, (int, float))})
    if metrics is not None:
        write_pretrain_metrics(figures, Path(metrics))
    stageflow.logger().info(f"vision tower pretrained in {figures['pretrain_seconds']} s: held-out text->image "
                            f"R@5 {figures['holdout_t2i_r5']}, exported to {out}")
    return figures


def run_zero_shot(out: Path, params_file: Path) -> Path:
    """Export the retriever `train` starts from, with no fine-tuning (params `train:`), to ``out``."""
    from rare.config import load_section
    from rare.pretrain.tower import export_zero_shot

    return export_zero_shot(load_section("train", params_file), Path(out))


def pretrain(
    out: Annotated[Path, typer.Argument(help="Checkpoint directory (HF format: config.json, model.safetensors), "
                                        "replaced atomically.")],
    params_file: ParamsOpt = Path("params.yaml"),
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="Also write pretraining figures (seconds, "
                                                    "loss, held-out recall) here, for DVC.")] = None,
) -> None:
    """Pretrain the vision tower CLIP-style on generated alt-text pairs (params `pretrain:`); resumes after a kill."""
    run_stage(PRETRAIN, "pretrain", out=out, params_file=params_file, metrics=metrics)


def zero_shot(
    out: Annotated[Path, typer.Option("--out", help="Export directory, as `rare train` writes it.")],
    params_file: ParamsOpt = Path("params.yaml"),
) -> None:
    """Export the retriever `train` starts from, with no fine-tuning (params `train:`): the zero-shot row."""
    run_stage(ZERO_SHOT_EXPORT, "zero-shot", out=out, params_file=params_file)


def mount(app: typer.Typer) -> None:
    app.command(PRETRAIN.command)(pretrain)
    app.command(ZERO_SHOT_EXPORT.command)(zero_shot)
