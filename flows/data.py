"""Prefect flow of the data stage: generate the embedded benchmark into a fresh directory.

The benchmark is written to a temporary sibling and renamed into place only once it is whole
and valid, so a killed run never leaves half a dataset where later stages would read it.
"""

from __future__ import annotations

from rare import runtime

runtime.configure()

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows import transient  # noqa: E402
from rare.atomic import swap_in  # noqa: E402
from rare.benchmark import generate  # noqa: E402
from rare.config import ConfigError, load_section  # noqa: E402
from rare.config.data import DataParams  # noqa: E402
from rare.data.layout import POINTER_FILE  # noqa: E402
from rare.validate import print_report, validate_root  # noqa: E402


@task(name="generate-benchmark", task_run_name="generate-benchmark", cache_policy=NO_CACHE, retries=1,
      retry_condition_fn=transient)
def generate_task(tmp: Path, params: DataParams) -> dict[str, Any]:
    return generate(tmp, params)


@task(name="validate-benchmark", task_run_name="validate-benchmark", cache_policy=NO_CACHE)
def validate_task(tmp: Path) -> None:
    """Images were just written by us; the records, pools and qrels are what can go wrong."""
    report = validate_root(tmp, check_images=False)
    if report.errors:
        raise ValueError(f"generated benchmark is invalid ({len(report.errors)} errors), first: {report.errors[0]}")


@task(name="point-at-mbeir", task_run_name="point-at-mbeir", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5,
      retry_condition_fn=transient)
def point_task(tmp: Path, root: Path) -> dict[str, Any]:
    """Real M-BEIR (169 GB) is never copied: validate its records and leave a pointer to it.

    The pointer lists each JSONL/TSV/qrels file with its size and mtime, so the stage's DVC output
    (and everything downstream) changes when the external data does; `dvc repro -f data` re-checks it.
    """
    report = validate_root(root, check_images=False)
    if report.errors:
        print_report(report)
        raise ValueError(f"{root}: M-BEIR root is invalid ({len(report.errors)} errors), first: {report.errors[0]}")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".jsonl", ".tsv", ".txt")
                   and "mbeir_images" not in p.relative_to(root).parts)
    pointer = {"root": str(root.resolve()),
               "files": {str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}
    tmp.mkdir(parents=True)
    (tmp / POINTER_FILE).write_text(json.dumps(pointer, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return {"counts": report.counts, "files": len(files)}


def _log(params: DataParams, out: Path, manifest: dict[str, Any] | None, seconds: float) -> None:
    """Into the active run: the benchmark's settings and sizes, and the data's content digest."""
    import mlflow

    from rare.tracking import data_digest

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


@flow(name="data", flow_run_name="data", log_prints=False)
def data_flow(out: Path, params_file: Path = Path("params.yaml")) -> Path:
    """Generate the embedded benchmark at ``out`` (replacing what is there) and return ``out``.

    The MLflow run ``data`` spans the work and ends with its outcome.
    """
    from rare.tracking import child_run

    params = load_section("data", params_file)
    with child_run(load_section("tracking", params_file), "data", "data", {"rare.source": params.source}) as run_id:
        start = time.perf_counter()
        manifest = _build(Path(out), params, params_file)
        if run_id:
            _log(params, Path(out), manifest, time.perf_counter() - start)
    return Path(out)


def _build(out: Path, params: DataParams, params_file: Path) -> dict[str, Any] | None:
    """The benchmark's manifest, or None for a pointer to real M-BEIR."""
    logger = get_run_logger()
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run: ours by name
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    start = time.perf_counter()
    try:
        if params.source == "mbeir":
            root = Path(params.mbeir_root or "")
            if not root.is_dir():
                raise ConfigError(f"{params_file}: data.mbeir_root: {root} is not a directory")
            summary = point_task(tmp, root)
            swap_in(tmp, out)
            logger.info(f"M-BEIR root {root}: {summary['counts']} in {summary['files']} files; pointer at {out}")
            return None
        manifest = generate_task(tmp, params)
        validate_task(tmp)
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = manifest["counts"]
    logger.info(f"embedded benchmark ({params.preset}, seed {params.seed}) at {out}: "
                f"{counts['global_pool']} candidates, {counts['union_train']} train queries, "
                f"{sum(r['test'] for r in counts['dataset_tasks'].values())} test queries, "
                f"{counts['images']} images in {time.perf_counter() - start:.1f} s")
    return manifest
