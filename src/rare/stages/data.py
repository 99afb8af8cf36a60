"""The ``data`` stage: its declaration, its ``rare data`` command, and its MLflow run ``data`` around
``rare.dataroot.build_data_root``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from rare.stages.command import ParamsOpt, run_stage
from rare.stages.declare import RAW, Out, Stage, Step

DATA = Step("data", "rare.stages.data:run_data", ("data",))


def declared() -> Iterator[Stage]:
    yield Stage("data", DATA, (RAW,), outs=(Out(RAW),))


def _log(params: Any, out: Path, manifest: dict[str, Any] | None, seconds: float) -> None:
    """Into the active run: the settings and sizes, and the data's content digest."""
    import mlflow

    from rare.mlflow_runs import data_digest

    mlflow.set_tag("rare.data_digest", data_digest(out.resolve()))
    mlflow.log_params({"source": params.source, "preset": params.preset, "seed": params.seed,
                       "image_size": params.image_size, "unseen_entities": params.unseen_entities})
    mlflow.log_metric("seconds", seconds)
    if manifest is None:
        return
    mlflow.log_params({f"sizes.{k}": v for k, v in manifest["sizes"].items()})
    counts = manifest["counts"]
    mlflow.log_metrics({"images": counts["images"], "global_pool": counts["global_pool"],
                        "train_pool": counts["train_pool"], "union_train": counts["union_train"]})
    mlflow.log_dict(manifest, "benchmark.json")


def run_data(out: Path, params_file: Path) -> Path:
    """Write the data root at ``out`` (replacing what is there); the MLflow run spans the work."""
    from rare import stageflow
    from rare.config import load_section
    from rare.dataroot import build_data_root
    from rare.mlflow_runs import child_run

    params = load_section("data", params_file)
    with child_run(load_section("tracking", params_file), "data", "data", {"rare.source": params.source}) as run_id:
        start = time.perf_counter()
        manifest = build_data_root(Path(out), params, params_file, stageflow.logger().info)
        if run_id:
            _log(params, Path(out), manifest, time.perf_counter() - start)
    return Path(out)


def data(
    out: Annotated[Path, typer.Argument(help="Where to write the M-BEIR-layout root (replaced if it exists).")],
    params_file: ParamsOpt = Path("params.yaml"),
) -> None:
    """Generate the embedded benchmark (params `data:` section: preset, seed, sizes) into OUT."""
    run_stage(DATA, "data", out=out, params_file=params_file)


def mount(app: typer.Typer) -> None:
    app.command(DATA.command)(data)
