"""What `rare enhance corpus|queries` runs: one Prefect task per shard, then assembly, reports and the
MLflow run ``enhance-<side>``; the stage fails loudly when too many items failed (after the failure
report is written). The enhancement itself lives in ``rare.enhance.run``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rare import stageflow
from rare.atomic import atomic_write
from rare.config import load_section
from rare.enhance.engine import FAILURES_FILE, Engine, Shard, ShardStats
from rare.enhance.run import WORKERS, Mapper, Outcome, check_failures, enhance_side, failures, print_outcome, samples


def prefect_mapper(retries: int) -> Mapper:
    """Each shard a task run; retrying one is safe: finished batches are in the item cache, a finished
    shard is in the store."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    shard_task = task(lambda engine, shard, progress: engine.process(shard, progress), name="enhance-shard",
                      task_run_name="enhance {shard.rel}#{shard.index}", cache_policy=NO_CACHE,
                      **stageflow.retry_options(retries))

    def run(engine: Engine, shards: list[Shard], progress: Callable[[int], None]) -> list[ShardStats]:
        with ThreadPoolTaskRunner(max_workers=WORKERS) as runner:
            futures = [runner.submit(shard_task, {"engine": engine, "shard": s, "progress": progress}) for s in shards]
            return [f.result() for f in futures]

    return run


def log_to_mlflow(outcome: Outcome, params: dict[str, Any]) -> None:
    """Into the active run: params, throughput and counts, the summary, and the samples and failures as tables."""
    import mlflow
    import pandas as pd

    mlflow.log_params(params)
    s, r = outcome.summary, outcome.runtime
    metrics = {k: r[k] for k in ("items_per_s", "seconds", "generated", "cache_hits", "shards_reused",
                                 "gen_tokens_in", "gen_tokens_out")}
    metrics |= {k: s[k] for k in ("items", "ok", "failed", "skipped", "failure_rate", "tokens_in", "tokens_out")}
    metrics |= {f"failures_{cause}": n for cause, n in s["failures_by_cause"].items()}
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    mlflow.log_dict(s, "enhance_summary.json")
    columns = ["op", "status", "file", "id", "image", "before", "after", "cause"]
    mlflow.log_table(pd.DataFrame(samples(outcome), columns=columns), "samples.json")
    mlflow.log_table(pd.DataFrame(failures(outcome), columns=["file", "line", "id", "op", "cause"]), "failures.json")


def write_metrics(outcome: Outcome, path: Path) -> None:
    """``path`` (the DVC metric) holds the failure rate only; the counts and this run's throughput go to
    ``runtime/<name>`` beside it, which neither git nor DVC tracks, with one cost record per item enhanced
    (``costs_file``; a reused shard's as recorded when generated). (DVC refuses a metric file inside a
    stage's output folder, so the summary in the output folder cannot be the metric.)"""
    atomic_write(path, [(json.dumps({"failure_rate": outcome.summary["failure_rate"]}, indent=2) + "\n").encode()])
    runtime = {**outcome.summary, "runtime": outcome.runtime}
    atomic_write(path.parent / "runtime" / path.name, [(json.dumps(runtime, indent=2, sort_keys=True) + "\n").encode()])
    atomic_write(costs_file(path), (json.dumps(asdict(c)).encode() + b"\n" for c in outcome.costs))


def costs_file(metrics: Path) -> Path:
    """Per-item cost records (tokens, seconds) of the run that wrote ``metrics``: runtime data, untracked."""
    return metrics.parent / "runtime" / f"{metrics.stem}_costs.jsonl"


def failures_artifact(outcome: Outcome, side: str) -> None:
    """A table of failures by cause on the flow run, where a failed enhancement is looked at first."""
    from prefect.artifacts import create_table_artifact

    causes = outcome.summary["failures_by_cause"]
    create_table_artifact(
        key=f"enhance-{side}-failures",
        table=[{"cause": cause, "items": n} for cause, n in sorted(causes.items())] or [{"cause": "none", "items": 0}],
        description=f"enhance {outcome.side}: {outcome.summary['failed']} of {outcome.summary['enhanceable']} items "
                    f"failed; every one is listed in {outcome.out / FAILURES_FILE}",
    )


def run(side: str, data: Path, out: Path, params_file: Path, metrics: Path | None = None) -> dict:
    """Enhance the corpus or the queries of the M-BEIR root ``data`` into ``out``; returns the summary.

    The MLflow run ``enhance-<side>`` spans the work and ends FAILED when too many items failed.
    """
    from rare.tracking import child_run

    params = load_section("enhance", params_file)
    mapper = prefect_mapper(params.retries) if stageflow.in_run() and not params.ray.enabled else None
    logged = {"backend": params.backend, "model": params.model, "prompt_version": params.prompt_version,
              "shard_size": params.shard_size, "batch_size": params.batch_size, "seed": params.seed,
              "ray": params.ray.enabled, **{f"noise_{k}": v for k, v in params.noise.model_dump().items()}}
    tracking = load_section("tracking", params_file)
    with child_run(tracking, "enhance", f"enhance-{side}", {"rare.side": side}, data=data) as run_id:
        outcome = enhance_side(params, Path(data), Path(out), side, mapper=mapper)
        print_outcome(outcome)
        if stageflow.in_run():
            failures_artifact(outcome, side)
        if run_id:
            log_to_mlflow(outcome, logged)
        check_failures(outcome)  # before the metrics: a failed run replaces no output
        if metrics is not None:
            write_metrics(outcome, Path(metrics))
    return outcome.summary
