"""What `rare pretrain` and `rare zero-shot` run: the pretraining (``rare.pretrain.stage``) with its
MLflow run and DVC figures, and the zero-shot export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rare import stageflow
from rare.atomic import atomic_write
from rare.config import load_section

RUNTIME = ("text_seconds", "fit_seconds", "pretrain_seconds", "steps", "batch_size", "pairs", "captions",
           "holdout_pairs", "holdout_captions")


def write_metrics(figures: dict[str, Any], path: Path) -> None:
    """Split as the other stages split it: ``path`` (the DVC metric) holds quality figures only, the loss
    curve goes to ``loss/pretrain.json`` for `dvc plots`, timings and counts to the untracked ``runtime/``."""
    def write(target: Path, obj: Any) -> None:
        atomic_write(target, [(json.dumps(obj, indent=2) + "\n").encode()])

    write(path, {k: v for k, v in figures.items() if k not in RUNTIME and k != "loss"})
    write(path.parent / "loss" / "pretrain.json", [{"step": i, "loss": v} for i, v in enumerate(figures["loss"])])
    write(path.parent / "runtime" / path.name, {k: figures[k] for k in RUNTIME if k in figures})


def run_pretrain(out: Path, params_file: Path, metrics: Path | None = None) -> dict[str, Any]:
    """Pretrain the vision tower (params `pretrain:`) into ``out``; a retry resumes from the last
    checkpoint in pretrain.cache_dir."""
    import mlflow

    from rare.pretrain.stage import pretrain
    from rare.tracking import child_run

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
        write_metrics(figures, Path(metrics))
    stageflow.logger().info(f"vision tower pretrained in {figures['pretrain_seconds']} s: held-out text->image "
                            f"R@5 {figures['holdout_t2i_r5']}, exported to {out}")
    return figures


def run_zero_shot(out: Path, params_file: Path) -> Path:
    """Export the retriever `train` starts from, with no fine-tuning (params `train:`), to ``out``."""
    from rare.pretrain.stage import export_zero_shot

    return export_zero_shot(load_section("train", params_file), Path(out))
