"""Prefect flows of the pretrain stage (vision tower on the alt-text corpus) and of the zero-shot export."""

from __future__ import annotations

from rare import runtime

runtime.configure()

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows import transient  # noqa: E402
from rare.atomic import atomic_write  # noqa: E402
from rare.config import load_section  # noqa: E402

RUNTIME = ("text_seconds", "fit_seconds", "pretrain_seconds", "steps", "batch_size", "pairs", "captions",
           "holdout_pairs", "holdout_captions")


def _write_metrics(figures: dict[str, Any], path: Path) -> None:
    """Split as the other stages split it: ``path`` (the DVC metric) holds quality figures only, the loss
    curve goes to ``loss/pretrain.json`` for `dvc plots`, timings and counts to the untracked ``runtime/``."""
    def write(target: Path, obj: Any) -> None:
        atomic_write(target, [(json.dumps(obj, indent=2) + "\n").encode()])

    write(path, {k: v for k, v in figures.items() if k not in RUNTIME and k != "loss"})
    write(path.parent / "loss" / "pretrain.json", [{"step": i, "loss": v} for i, v in enumerate(figures["loss"])])
    write(path.parent / "runtime" / path.name, {k: figures[k] for k in RUNTIME if k in figures})


@task(name="pretrain-vision", task_run_name="pretrain-vision", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, retry_condition_fn=transient)
def pretrain_task(out: Path, params_file: Path, metrics: Path | None) -> dict[str, Any]:
    """A retry resumes from the last checkpoint in pretrain.cache_dir."""
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
        _write_metrics(figures, Path(metrics))
    return figures


@flow(name="pretrain", flow_run_name="pretrain", log_prints=False)
def pretrain_flow(out: Path, params_file: Path = Path("params.yaml"), metrics: Path | None = None) -> dict[str, Any]:
    """Pretrain the vision tower (params `pretrain:`) and write its HF checkpoint to ``out``."""
    figures = pretrain_task(out, params_file, metrics)
    get_run_logger().info(f"vision tower pretrained in {figures['pretrain_seconds']} s: held-out text->image "
                          f"R@5 {figures['holdout_t2i_r5']}, exported to {out}")
    return figures


@task(name="export-zero-shot", task_run_name="export-zero-shot", cache_policy=NO_CACHE)
def zero_shot_task(out: Path, params_file: Path) -> Path:
    from rare.pretrain.stage import export_zero_shot

    return export_zero_shot(load_section("train", params_file), Path(out))


@flow(name="zero-shot", flow_run_name="zero-shot", log_prints=False)
def zero_shot_flow(out: Path, params_file: Path = Path("params.yaml")) -> Path:
    """Export the retriever `train` starts from, with no fine-tuning (params `train:`), to ``out``."""
    return zero_shot_task(out, params_file)
