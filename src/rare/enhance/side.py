"""Enhance one side of an M-BEIR root: plan shards, map them over workers, assemble, report.

The mapper is the only thing that differs between running here (threads), under Prefect (one
task per shard, with retries) and on Ray (actors); planning and assembly are always the same.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rare import runtime
from rare.atomic import atomic_write, remove_stale_temps, swap_in_files, temp_sibling
from rare.config.enhance import EnhanceParams
from rare.contracts import EnhanceRuntime, EnhanceSummary
from rare.data.layout import MBEIRRoot
from rare.data.records import iter_jsonl
from rare.enhance.backends import make_backend as backend_from_params
from rare.enhance.backends.interface import Backend
from rare.enhance.engine import (
    FAILURES_FILE,
    SUMMARY_FILE,
    CostRecord,
    Engine,
    EngineConfig,
    Shard,
    ShardStats,
    input_files,
    merge_stats,
)

Mapper = Callable[[Engine, list[Shard], Callable[[int], None]], list[ShardStats]]
WORKERS = 2  # shards in flight per process: one generating while the other is read, hashed and written


class EnhanceFailure(ValueError):
    """Too many items failed: raised after the outputs and the failure report are written."""


@dataclass
class Outcome:
    side: str                 # corpus | query (side_of: the CLI's "queries" is the query side)
    out: Path
    summary: EnhanceSummary   # deterministic counts, also written to out/enhance_summary.json
    runtime: EnhanceRuntime   # this run's throughput, cache hits and tokens
    costs: list[CostRecord] = field(default_factory=list)  # per item; a reused shard's as recorded when generated


def thread_mapper(engine: Engine, shards: list[Shard], progress: Callable[[int], None]) -> list[ShardStats]:
    """The first failure cancels the shards not started yet; those in flight finish and are kept."""
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="enhance")
    futures = [pool.submit(engine.process, shard, progress) for shard in shards]
    try:
        return [f.result() for f in futures]
    finally:
        pool.shutdown(cancel_futures=True)


def ray_mapper(params: EnhanceParams, make_backend: Callable[[], Backend]) -> Mapper:
    from rare.enhance.ray_runner import run_on_ray

    return lambda engine, shards, progress: run_on_ray(params.ray, engine.config, make_backend, shards, progress)


@contextmanager
def progress_bar(label: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=runtime.console()) as bar:  # shared with logging: lines print above it
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def enhance_side(params: EnhanceParams, data: Path, out: Path, side: str, *,
                 make_backend: Callable[[], Backend] | None = None, identity: tuple[str, str] | None = None,
                 mapper: Mapper | None = None, progress: bool = True) -> Outcome:
    """Enhance every file of ``side`` into ``out``. A custom ``make_backend`` comes with its (name, model)."""
    if (make_backend is None) != (identity is None):
        raise ValueError("make_backend and identity go together")
    start = time.perf_counter()
    root = MBEIRRoot.open(data)
    config = EngineConfig.from_params(params, root, side, identity)
    factory = make_backend or partial(backend_from_params, params)
    if mapper is None:
        mapper = ray_mapper(params, factory) if params.ray.enabled else thread_mapper
    engine = Engine(config, factory)
    try:
        files = input_files(root, config.side)
        shards = engine.plan(files, params.shard_size)
        unique = list({s.digest: s for s in shards}.values())  # identical shards (repeated pools) run once
        with progress_bar(f"enhance {config.side}", sum(s.lines for s in unique), progress) as advance:
            stats = mapper(engine, unique, advance)
        out = Path(out)
        remove_stale_temps(out)
        staged = temp_sibling(out)
        try:
            summary = engine.assemble(files, shards, staged, params.shard_size, params.max_failure_rate)
            out = _publish(staged, out, summary)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    finally:
        engine.close()
    seconds = time.perf_counter() - start
    costs = [c for s in stats for c in s.costs]
    return Outcome(config.side, out, summary, merge_stats(stats, summary["items"], seconds), costs)


def failed_dir(out: Path) -> Path:
    """Where a run that failed ``max_failure_rate`` leaves its reports: beside ``out``, which it leaves alone."""
    return out.with_name(f"{out.name}.failed")


def _too_many_failures(summary: EnhanceSummary) -> bool:
    return summary["failure_rate"] > summary["max_failure_rate"]


def _publish(staged: Path, out: Path, summary: EnhanceSummary) -> Path:
    """Swap the assembled files in, or, when too many items failed, keep only its two reports in
    ``failed_dir(out)`` so a previous good ``out`` survives. Returns where the reports now are."""
    failed = failed_dir(out)
    shutil.rmtree(failed, ignore_errors=True)
    if not _too_many_failures(summary):
        return swap_in_files(staged, out)
    failed.mkdir(parents=True)
    for name in (FAILURES_FILE, SUMMARY_FILE):
        os.replace(staged / name, failed / name)
    return failed


def samples(outcome: Outcome, per_op: int = 5) -> list[dict[str, Any]]:
    """The first ``per_op`` enhanced records of each operation, the text before and after: what a reader
    checks first (is the caption right? did the rewrite keep the constraint?). Reading stops as soon as
    every operation has its rows, so a 5.6M-line pool is not read to the end."""
    text_field, image_field = ("query_txt", "query_img_path") if outcome.side == "query" else ("txt", "img_path")
    wanted = {op: min(per_op, sum(counts.values())) for op, counts in outcome.summary["by_op"].items() if op != "none"}
    taken = dict.fromkeys(wanted, 0)
    rows: list[dict[str, Any]] = []
    for rel in outcome.summary["files"]:
        if taken == wanted or not (outcome.out / rel).is_file():  # a failed run's folder holds only its reports
            break
        for _, obj in iter_jsonl(outcome.out / rel):
            block = obj.get("enhanced") or {}
            op = block.get("op")
            if op not in wanted or taken[op] >= wanted[op]:
                continue
            taken[op] += 1
            rows.append({"op": op, "status": block.get("status"), "file": rel, "id": obj.get("qid") or obj.get("did"),
                         "image": obj.get(image_field) or "", "before": obj.get(text_field) or "",
                         "after": block.get("txt") or "", "cause": block.get("cause") or ""})
            if taken == wanted:
                break
    return rows


def failures(outcome: Outcome, limit: int = 10_000) -> list[dict[str, Any]]:
    """The first ``limit`` rows of the failures file (file, line, id, op, cause)."""
    rows = []
    for _, row in iter_jsonl(outcome.out / FAILURES_FILE):
        if len(rows) >= limit:
            break
        rows.append(row)
    return rows


def check_failures(outcome: Outcome) -> None:
    """Raised after the reports are written; ``outcome.out`` is then the failure folder, not the output."""
    s = outcome.summary
    if _too_many_failures(s):
        causes = ", ".join(f"{k}: {v}" for k, v in sorted(s["failures_by_cause"].items()))
        raise EnhanceFailure(
            f"enhance {outcome.side}: {s['failed']} of {s['enhanceable']} items failed "
            f"({s['failure_rate']:.1%} > max_failure_rate {s['max_failure_rate']:.1%}); by cause: {causes}; "
            f"{dominant_cause(outcome)}; the output was not replaced; every failure is listed in "
            f"{outcome.out / FAILURES_FILE}"
        )


def dominant_cause(outcome: Outcome, limit: int = 100_000) -> str:
    """The most frequent whole cause (an HTTP status with the server's message, not only its category), counted
    over the first ``limit`` failures: enough to name a cause shared by many, and memory stays bounded."""
    counts = Counter(row["cause"] for row in failures(outcome, limit))
    if not counts:
        return "no failure listed"
    cause, n = counts.most_common(1)[0]
    return f"most often ({n} of {sum(counts.values())}): {cause}"


def print_outcome(outcome: Outcome, console: Console | None = None) -> None:
    """A narrow table and short plain lines: stage output is mostly read in logs (DVC, Prefect, CI), where
    rich wraps at 80 columns, so a line is never broken mid-figure and only a long list of causes passes 80."""
    s, r = outcome.summary, outcome.runtime
    console = console or Console()
    causes = ", ".join(f"{k} {v}" for k, v in sorted(s["failures_by_cause"].items())) or "none"
    lines = (f"{s['items']} items in {r['seconds']:.1f} s ({r['items_per_s']:.0f} items/s)",
             f"generated {r['generated']}, cache hits {r['cache_hits']}, shards reused {r['shards_reused']}/{r['shards']}",
             f"tokens in/out this run {r['gen_tokens_in']}/{r['gen_tokens_out']}",
             f"failure rate {s['failure_rate']:.2%} ({causes})")
    table = Table()
    table.add_column("op")
    for status in ("ok", "failed", "skipped"):
        table.add_column(status, justify="right")
    for op, counts in sorted(s["by_op"].items()):
        table.add_row(op, *(str(counts.get(k, 0)) for k in ("ok", "failed", "skipped")))
    plain = {"soft_wrap": True, "highlight": False, "markup": False}
    console.print(f"enhance {outcome.side}: {s['backend']} / {s['model']} / prompts {s['prompt_version']}", **plain)
    console.print(table)
    for line in lines:
        console.print(line, **plain)


def write_enhance_metrics(outcome: Outcome, path: Path) -> None:
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
