"""The ``enhance_corpus`` and ``enhance_queries`` stages: their declarations, the ``rare enhance`` commands,
and their wiring: one Prefect task per shard, the MLflow run ``enhance-<side>``, the failure artifact. The
stage fails loudly when too many items failed (after the failure report is written). The enhancement
itself is ``rare.enhance.side.enhance_side``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from rare.stages.command import DataOpt, ParamsOpt, run_stage
from rare.stages.declare import ENHANCED, RAW, Out, Stage, Step

if TYPE_CHECKING:
    from rare.enhance.engine import Engine, Shard, ShardStats
    from rare.enhance.side import Mapper, Outcome

ENHANCE = Step("enhance", "rare.stages.enhance:run_enhance", ("enhance",))


def _side(side: str) -> Stage:
    metrics = f"metrics/enhance_{side}.json"
    return Stage(f"enhance_{side}", ENHANCE, (side,), {"--data": RAW},
                 {"--out": ENHANCED[side], "--metrics": metrics}, outs=(Out(ENHANCED[side]), Out(metrics, cache=False)))


def declared() -> Iterator[Stage]:
    yield from (_side(side) for side in ENHANCED)


def prefect_mapper(retries: int) -> Mapper:
    """Each shard a task run; retrying one is safe: finished batches are in the item cache, a finished
    shard is in the store."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    from rare import stageflow
    from rare.enhance.side import WORKERS

    shard_task = task(lambda engine, shard, progress: engine.process(shard, progress), name="enhance-shard",
                      task_run_name="enhance {shard.rel}#{shard.index}", cache_policy=NO_CACHE,
                      **stageflow.retry_options(retries))

    def map_shards(engine: Engine, shards: list[Shard], progress: Callable[[int], None]) -> list[ShardStats]:
        with ThreadPoolTaskRunner(max_workers=WORKERS) as runner:
            futures = [runner.submit(shard_task, {"engine": engine, "shard": s, "progress": progress}) for s in shards]
            return [f.result() for f in futures]

    return map_shards


def log_to_mlflow(outcome: Outcome, params: dict[str, Any]) -> None:
    """Into the active run: params, throughput and counts, the summary, and the samples and failures as tables."""
    import mlflow
    import pandas as pd

    from rare.enhance.side import failures, samples

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


def failures_artifact(outcome: Outcome, side: str) -> None:
    """A table of failures by cause on the flow run, where a failed enhancement is looked at first."""
    from prefect.artifacts import create_table_artifact

    from rare.enhance.engine import FAILURES_FILE

    causes = outcome.summary["failures_by_cause"]
    create_table_artifact(
        key=f"enhance-{side}-failures",
        table=[{"cause": cause, "items": n} for cause, n in sorted(causes.items())] or [{"cause": "none", "items": 0}],
        description=f"enhance {outcome.side}: {outcome.summary['failed']} of {outcome.summary['enhanceable']} items "
                    f"failed; every one is listed in {outcome.out / FAILURES_FILE}",
    )


def run_enhance(side: str, data: Path, out: Path, params_file: Path, metrics: Path | None = None) -> dict:
    """Enhance the corpus or the queries of the M-BEIR root ``data`` into ``out``; returns the summary.

    The MLflow run ``enhance-<side>`` spans the work and ends FAILED when too many items failed.
    """
    from rare import stageflow
    from rare.config import load_section
    from rare.enhance.side import check_failures, enhance_side, print_outcome, write_enhance_metrics
    from rare.mlflow_runs import child_run

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
            write_enhance_metrics(outcome, Path(metrics))
    return outcome.summary


EnhanceOutOpt = Annotated[Path, typer.Option("--out", help="Output folder: the input files mirrored with an "
                                             "'enhanced' block per record, plus summary and failure reports.")]
MetricsOpt = Annotated[Optional[Path], typer.Option("--metrics", help="Also write the summary here (a DVC metric "
                                                    "cannot live inside the stage's output folder).")]


def _enhance(side: str, data: Path, out: Path, params_file: Path, metrics: Optional[Path]) -> None:
    run_stage(ENHANCE, f"enhance-{side}", side=side, data=data, out=out, params_file=params_file, metrics=metrics)


def enhance_corpus(data: DataOpt, out: EnhanceOutOpt, params_file: ParamsOpt = Path("params.yaml"),
                   metrics: MetricsOpt = None) -> None:
    """Caption image-only candidates and add visual context to image+text ones (every pool file)."""
    _enhance("corpus", data, out, params_file, metrics)


def enhance_queries(data: DataOpt, out: EnhanceOutOpt, params_file: ParamsOpt = Path("params.yaml"),
                    metrics: MetricsOpt = None) -> None:
    """Caption image queries, name the subject of image questions, condense modification requests."""
    _enhance("queries", data, out, params_file, metrics)


def mount(app: typer.Typer) -> None:
    group = typer.Typer(no_args_is_help=True, help="VLM enhancement of the corpus or the queries.")
    group.command("corpus")(enhance_corpus)
    group.command("queries")(enhance_queries)
    app.add_typer(group, name=ENHANCE.command)
