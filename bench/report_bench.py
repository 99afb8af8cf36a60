"""What the intervals add to the report stage, at the embedded default's size: 8 evaluations x 8 dataset-tasks
x 200 test queries x 2 pools, top-50 run files. The reference, measured in the same run, is reading every run
file once (what any per-query statistic must do); the figure is the whole interval work (read + paired
bootstrap of every table cell + the findings' permutation tests)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import row

DTS = {"glyphcaps_task0": 5, "factwiki_task1": 5, "factwiki_task2": 5, "glyphcaps_task3": 5, "twinpix_task4": 5,
       "emblemkb_task6": 5, "tweakset_task7": 10, "emblemkb_task8": 5}
ROWS = {"zero-shot": ("none", "zero-shot"), "none": ("none", "trained"), "corpus": ("corpus", "trained"),
        "query": ("query", "trained"), "both": ("both", "trained"), "infer-corpus": ("corpus", "inference-only"),
        "infer-query": ("query", "inference-only"), "infer-both": ("both", "inference-only")}


def _fixture(root: Path, queries: int, depth: int = 50) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    data, evals = root / "data", root / "eval"
    for dt in DTS:
        q = data / "qrels/test" / f"mbeir_{dt}_test_qrels.txt"
        q.parent.mkdir(parents=True, exist_ok=True)
        q.write_text("".join(f"1:{i} 0 p{i} 1 0\n" for i in range(queries)))
    for name, (inputs, regime) in ROWS.items():
        d = evals / name
        metrics: dict[str, Any] = {"score": {}}
        for pool in ("local", "global"):
            metrics[pool] = {}
            for dt, k in DTS.items():
                ranks = rng.integers(0, 2 * depth, queries)  # rank of the positive; >= depth: not retrieved
                lines = []
                for i, r in enumerate(ranks):
                    lines += [f"1:{i} Q0 {'p' if j == r else 'n'}{i}_{j} {j + 1} {1 - j / depth:.4f} x\n"
                              for j in range(depth)]
                run = d / "runs" / pool / f"{dt}.trec"
                run.parent.mkdir(parents=True, exist_ok=True)
                run.write_text("".join(lines))
                hit = float((ranks < k).mean() * 100)
                metrics[pool][dt] = {f"R@{k}": hit, "headline": hit, "queries": float(queries)}
            metrics["score"][pool] = float(np.mean([m["headline"] for m in metrics[pool].values()]))
        (d / "metrics.json").write_text(json.dumps(metrics))
        (d / "info.json").write_text(json.dumps({
            "name": name, "inputs": inputs, "regime": regime, "model_variant": "zero-shot" if regime == "zero-shot"
            else inputs if regime == "trained" else "none", "split": "test", "data": str(data),
            "dataset_tasks": list(DTS), "headline": {dt: f"R@{k}" for dt, k in DTS.items()}}))
    return data, evals


def run(quick: bool = False) -> list[dict[str, Any]]:
    from rare.config.report import ReportParams
    from rare.evaluate.runfile import read_run
    from rare.report.evidence import delta_intervals, load_samples, split_seeds
    from rare.report.findings import assess
    from rare.report.stats import Bootstrap
    from rare.report.table import find_baseline, load_evaluations

    params = ReportParams()
    with tempfile.TemporaryDirectory() as tmp:
        data, evals = _fixture(Path(tmp), 50 if quick else 200)
        t0 = time.perf_counter()
        for f in sorted(evals.glob("*/runs/*/*.trec")):
            read_run(f)
        reference = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows, replicas = split_seeds(load_evaluations(evals))
        base = find_baseline(rows)
        boots = {p: Bootstrap(load_samples(replicas, data, p), params.resamples, 0) for p in ("local", "global")}
        cells = {p: delta_intervals(rows, base, b) for p, b in boots.items()}
        findings = assess(rows, boots["local"], params.permutations)
        seconds = time.perf_counter() - t0
    n = sum(len(c) for per in cells.values() for c in per.values())
    return [row(f"report intervals: {n} delta cells x {params.resamples} resamples + {len(findings)} findings "
                f"({params.permutations} permutations) / reading the run files", seconds, reference, "s", 3.0),
            row("report intervals: seconds / the 600 s pipeline budget (info: a constant, not a same-run reference)",
                seconds, 600.0, "s", None)]
