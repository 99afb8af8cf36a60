"""Prefect flow of the train stage: one retriever per ablation variant.

Under DDP, Lightning starts the other ranks by re-running the same command; those worker
processes train directly (``train_entry``) instead of opening a second Prefect flow run.
"""

from __future__ import annotations

from rare import runtime

runtime.configure()

import os  # noqa: E402
from pathlib import Path  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows import transient  # noqa: E402
from rare.config import load_section  # noqa: E402
from rare.train.stage import train_variant  # noqa: E402


def _train(variant: str, data: Path, out: Path, corpus_enhanced: Path | None, queries_enhanced: Path | None,
           params_file: Path, metrics: Path | None) -> Path:
    params = load_section("train", params_file)
    tracking = load_section("tracking", params_file)
    return train_variant(variant, Path(data), Path(out), params, tracking,
                         Path(corpus_enhanced) if corpus_enhanced else None,
                         Path(queries_enhanced) if queries_enhanced else None,
                         metrics=Path(metrics) if metrics is not None else None)


# A retry resumes from the last checkpoint; bad input (ValueError) is not retried (it fails the same way).
train_task = task(_train, name="fit-and-export", task_run_name="fit-{variant}", cache_policy=NO_CACHE,
                  retries=1, retry_delay_seconds=5, retry_condition_fn=transient)


@flow(name="train", flow_run_name="train-{variant}", log_prints=False)
def train_flow(variant: str, data: Path, out: Path, corpus_enhanced: Path | None = None,
               queries_enhanced: Path | None = None, params_file: Path = Path("params.yaml"),
               metrics: Path | None = None) -> Path:
    """Train ``variant`` (none|corpus|query|both) on ``data`` and export the retriever to ``out``."""
    # Under DDP the other ranks are separate processes started by Lightning: an in-process retry on
    # rank 0 alone would wait for peers that are gone, so a failed DDP run fails (and resumes on rerun).
    retries = 0 if load_section("train", params_file).strategy == "ddp" else 1
    out = train_task.with_options(retries=retries)(variant, data, out, corpus_enhanced, queries_enhanced,
                                                   params_file, metrics)
    get_run_logger().info(f"retriever for variant {variant!r} exported to {out}")
    return out


def is_ddp_worker() -> bool:
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def train_entry(variant: str, data: Path, out: Path, corpus_enhanced: Path | None = None,
                queries_enhanced: Path | None = None, params_file: Path = Path("params.yaml"),
                metrics: Path | None = None) -> Path:
    """What `rare train` runs: the flow on rank 0, the bare stage on DDP worker processes."""
    if is_ddp_worker():
        return _train(variant, data, out, corpus_enhanced, queries_enhanced, params_file, metrics)
    return train_flow(variant, data, out, corpus_enhanced, queries_enhanced, params_file, metrics)
