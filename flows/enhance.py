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
from rare.enhance.engine import Engine, Shard, ShardStats  # noqa: E402
from rare.enhance.run import WORKERS, Mapper, Outcome, check_failures, enhance_side, print_outcome  # noqa: E402


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


def log_to_mlflow(outcome: Outcome, params_file: Path, params: dict[str, Any]) -> None:
    import mlflow

    from rare.tracking import child_run

    tracking = load_section("tracking", params_file)
    with child_run(tracking, "enhance", f"enhance-{outcome.side}", {"rare.side": outcome.side}) as run:
        if run is None:
            return
        mlflow.log_params(params)
        s, r = outcome.summary, outcome.runtime
        metrics = {k: r[k] for k in ("items_per_s", "seconds", "generated", "cache_hits", "shards_reused",
                                     "gen_tokens_in", "gen_tokens_out")}
        metrics |= {k: s[k] for k in ("items", "ok", "failed", "skipped", "failure_rate", "tokens_in", "tokens_out")}
        metrics |= {f"failures_{cause}": n for cause, n in s["failures_by_cause"].items()}
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_dict(s, "enhance_summary.json")


@flow(name="enhance", task_runner=ThreadPoolTaskRunner(max_workers=WORKERS), log_prints=False)
def enhance_flow(side: str, data: Path, out: Path, params_file: Path = Path("params.yaml"),
                 metrics: Path | None = None) -> dict:
    """Enhance the corpus or the queries of the M-BEIR root ``data`` into ``out``; returns the summary.

    ``metrics`` gets a copy of the summary: DVC refuses a metric file inside a stage's output folder.
    """
    params = load_section("enhance", params_file)
    mapper = None if params.ray.enabled else prefect_mapper(params.retries)
    outcome = enhance_side(params, Path(data), Path(out), side, mapper=mapper)
    print_outcome(outcome)
    logged = {"backend": params.backend, "model": params.model, "prompt_version": params.prompt_version,
              "shard_size": params.shard_size, "batch_size": params.batch_size, "seed": params.seed,
              "ray": params.ray.enabled, **{f"noise_{k}": v for k, v in params.noise.model_dump().items()}}
    log_to_mlflow(outcome, Path(params_file), logged)
    check_failures(outcome)  # before the metrics: a failed run replaces no output
    if metrics is not None:
        atomic_write(Path(metrics), [(json.dumps(outcome.summary, indent=2, sort_keys=True) + "\n").encode()])
    return outcome.summary
