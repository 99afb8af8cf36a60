"""Write the datasets' records, qrels, instructions and images in the exact M-BEIR layout.

Every path comes from ``MBEIRRoot`` and every record goes through ``write_jsonl``, so the
benchmark and real M-BEIR are read by the same code. Files are written in a fixed order from
seeded data, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rare.benchmark.builder import DatasetBuild
from rare.benchmark.datasets import EMBEDDED_BY_NAME
from rare.benchmark.render import render_all
from rare.data.instructions import HEADER
from rare.data.layout import MBEIRRoot
from rare.data.qrels import qrels_line
from rare.data.records import write_jsonl
from rare.mbeir import TASKS, DatasetTask, dataset


def _qrels(path: Path, queries: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for q in queries:
            for did in q["pos_cand_list"]:
                fh.write(qrels_line(q["qid"], did, q["task_id"]))


def _instructions(path: Path, groups: list[tuple[str, int]]) -> None:
    lines = ["\t".join(HEADER)]
    for name, task in groups:
        qmod, cmod = TASKS[task]
        spec = EMBEDDED_BY_NAME[name]
        lines.append("\t".join([qmod, cmod, spec.tsv_name, str(spec.dataset.id), *spec.instructions[task]]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_root(out: Path, builds: list[DatasetBuild], image_size: int, workers: int = 0) -> dict[str, Any]:
    """Write every file under ``out`` and return the counts that go into the manifest."""
    root = MBEIRRoot(out)
    counts: dict[str, Any] = {"dataset_tasks": {}, "train_queries": {}}
    union_train: list[dict[str, Any]] = []
    train_pool: list[dict[str, Any]] = []
    pools: list[tuple[DatasetTask, list[dict[str, Any]]]] = []
    for b in builds:
        train = [q for (split, _t), qs in sorted(b.queries.items()) if split == "train" for q in qs]
        write_jsonl(root.query_file("train", b.name), train)
        _qrels(root.qrels_file("train", b.name), train)
        union_train.extend(train)
        train_pool.extend(b.train_pool)
        counts["train_queries"][b.name] = len(train)
        for task, pool in sorted(b.pools.items()):
            dt = DatasetTask(b.name, task)
            write_jsonl(root.local_pool(dt), pool)
            pools.append((dt, pool))
            row = counts["dataset_tasks"][dt.name] = {"pool": len(pool)}
            for split in ("val", "test"):
                qs = b.queries.get((split, task), [])
                write_jsonl(root.query_file(split, b.name, task), qs)
                _qrels(root.qrels_file(split, dt), qs)
                row[split] = len(qs)
    pools.sort(key=lambda item: (item[0].task_id, dataset(item[0].dataset).id))  # M-BEIR table order
    counts["global_pool"] = write_jsonl(root.global_pool("test"), (c for _, pool in pools for c in pool))
    counts["train_pool"] = write_jsonl(root.global_pool("train"), train_pool)
    counts["union_train"] = write_jsonl(root.union_train_file, union_train)
    _instructions(root.instructions_file, [(dt.dataset, dt.task_id) for dt, _ in pools])
    jobs = [(root.path / rel, scene) for b in builds for rel, scene in b.images.items()]
    counts["images"] = render_all(jobs, image_size, workers)
    return counts


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """What was generated and how: seed, sizes, counts (no timestamps, so reruns stay byte-identical)."""
    (out / "benchmark.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
