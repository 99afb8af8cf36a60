"""Prefect flow of the enhance stages: one task per shard (with retries), then assembly and reports.

All logic lives in ``rare.enhance``; this module maps shards onto Prefect tasks, logs the run to
MLflow, and fails the flow loudly when too many items failed (after the failure report is written).
"""

from __future__ import annotations

from rare import runtime

runtime.configure()

import json  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, task, unmapped  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from flows import transient  # noqa: E402
from rare.atomic import atomic_write  # noqa: E402
from rare.config import load_section  # noqa: E402
from rare.enhance.engine import FAILURES_FILE, Engine, Shard, ShardStats  # noqa: E402
from rare.enhance.run import (  # noqa: E402
    WORKERS,
    Mapper,
    Outcome,
    check_failures,
    enhance_side,
    failures,
    print_outcome,
    samples,
)


@task(name="enhance-shard", task_run_name="enhance {shard.rel}#{shard.index}", cache_policy=NO_CACHE,
      retries=2, retry_delay_seconds=5, retry_condition_fn=transient)
def enhance_shard(engine: Engine, shard: Shard, progress: Callable[[int], None]) -> ShardStats:
    """Retrying is safe: finished batches are in the item cache, a finished shard is in the store."""
    return engine.process(shard, progress)


def prefect_mapper(retries: int) -> Mapper:
    def run(engine: Engine, shards: list[Shard], progress: Callable[[int], None]) -> list[ShardStats]:
        futures = enhance_shard.with_options(retries=retries).map(unmapped(engine), shards, unmapped(progress))
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
    ``runtime/<name>`` beside it, which neither git nor DVC tracks. (DVC refuses a metric file inside a
    stage's output folder, so the summary in the output folder cannot be the metric.)"""
    atomic_write(path, [(json.dumps({"failure_rate": outcome.summary["failure_rate"]}, indent=2) + "\n").encode()])
    runtime = {**outcome.summary, "runtime": outcome.runtime}
    atomic_write(path.parent / "runtime" / path.name, [(json.dumps(runtime, indent=2, sort_keys=True) + "\n").encode()])


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


@flow(name="enhance", flow_run_name="enhance-{side}", task_runner=ThreadPoolTaskRunner(max_workers=WORKERS),
      log_prints=False)
def enhance_flow(side: str, data: Path, out: Path, params_file: Path = Path("params.yaml"),
                 metrics: Path | None = None) -> dict:
    """Enhance the corpus or the queries of the M-BEIR root ``data`` into ``out``; returns the summary.

    The MLflow run ``enhance-<side>`` spans the work and ends FAILED when too many items failed.
    """
    from rare.tracking import child_run

    params = load_section("enhance", params_file)
    mapper = None if params.ray.enabled else prefect_mapper(params.retries)
    logged = {"backend": params.backend, "model": params.model, "prompt_version": params.prompt_version,
              "shard_size": params.shard_size, "batch_size": params.batch_size, "seed": params.seed,
              "ray": params.ray.enabled, **{f"noise_{k}": v for k, v in params.noise.model_dump().items()}}
    tracking = load_section("tracking", params_file)
    with child_run(tracking, "enhance", f"enhance-{side}", {"rare.side": side}, data=data) as run_id:
        outcome = enhance_side(params, Path(data), Path(out), side, mapper=mapper)
        print_outcome(outcome)
        failures_artifact(outcome, side)
        if run_id:
            log_to_mlflow(outcome, logged)
        check_failures(outcome)  # before the metrics: a failed run replaces no output
        if metrics is not None:
            write_metrics(outcome, Path(metrics))
    return outcome.summary
